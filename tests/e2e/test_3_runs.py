"""Observations under systemd: ``ssdaqctl run`` by a member of group ssdaq, checksummed files.

The files run in name order on one container (session fixture ``machine``); each test
leaves the units as it found them: sockets listening, receivers stopped or running.
"""

import json
import time

import pytest

from tests.e2e.container import Container
from tests.e2e.daq import SIM, record

pytestmark = pytest.mark.e2e
USER = "e2e-observer"
WRITERS = ("ssdaq-writer@readout.service", "ssdaq-writer@trigger.service")
DROPIN = "/run/systemd/system/ssdaq-readout.service.d/e2e-observation.conf"


def test_a_member_of_group_ssdaq_records_an_observation_that_sha256sum_verifies(
        machine: Container) -> None:
    assert machine.run("stat", "-c", "%a %U:%G", "/var/lib/ssdaq/run").stdout.split() == [
        "2770", "ssdaq:ssdaq"], "the package's tmpfiles.d entry"
    machine.run("useradd", "--no-create-home", "--groups", "ssdaq", USER)
    machine.write(DROPIN, "[Service]\nEnvironment=SSDAQ_E2E_MARK=observation\n")
    machine.run("systemctl", "daemon-reload")
    machine.run("systemctl", "start", "ssdaq-readout.service", *WRITERS)
    try:
        started = machine.run("ssdaqctl", "run", "start", "--obs-id", "42", "--comment",
                              "e2e under systemd", "--json", user=USER)
        reply = json.loads(started.stdout)
        assert {n: r.get("file", "")[:18] for n, r in reply["writers"].items()} == {
            "writer-readout": "readout_obs000042_", "writer-trigger": "trigger_obs000042_"
        }, reply
        machine.run(*SIM, "--duration", "2", timeout=30)
        time.sleep(1.5)  # the assembler publishes the last readouts, the writer takes them
        stopped = machine.run("ssdaqctl", "run", "stop", user=USER)
        assert "observation 42 ended" in stopped.stdout
        assert machine.run("ssdaqctl", "run", "stop", user=USER, check=False).returncode == 1
    finally:
        machine.run("systemctl", "stop", *WRITERS, "ssdaq-readout.service")
        machine.run("rm", "-r", DROPIN.rsplit("/", 1)[0])
        machine.run("systemctl", "daemon-reload")
    directory = "/var/lib/ssdaq/data/readout"
    names = machine.run("sh", "-c", f"cd {directory} && ls readout_obs000042_*").stdout.split()
    [chunk] = [n for n in names if n.endswith(".hdf5")]
    assert f"{chunk}.sha256" in names and chunk.endswith("_000.hdf5"), names
    checked = machine.run("sh", "-c", f"cd {directory} && sha256sum -c {chunk}.sha256", user=USER)
    assert checked.stdout.strip() == f"{chunk}: OK"
    assert machine.exists("/var/lib/ssdaq/data/trigger/" + reply["writers"]["writer-trigger"]
                          ["file"].removesuffix(".part"))
    info = json.loads(machine.run("ssdaq-info", "--json", f"{directory}/{chunk}", user=USER).stdout)
    attrs = info["attributes"]
    assert (attrs["obs_id"], attrs["comment"], attrs["rows"]) == (42, "e2e under systemd", 20)
    assert "[assembler]" in attrs["config_readout"], "the receiver answered config in the sandbox"
    mark = f"# {DROPIN}\n[Service]\nEnvironment=SSDAQ_E2E_MARK=observation\n"
    assert mark in attrs["dropins_readout"], attrs["dropins_readout"]
    assert {r["source"] for r in info["ledger"]} == {"readout", "writer-readout"}
    assert not [r for r in info["ledger"] if r["kind"] == "loss" and r["delta"]], info["ledger"]
    record(machine, "observation file", f"{directory}/{chunk} ({attrs['rows']} rows)")
