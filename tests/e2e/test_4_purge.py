"""apt purge, last of the end-to-end run (check 8).

The files run in name order on one container (session fixture ``machine``); each test
leaves the units as it found them: sockets listening, receivers stopped or running.
"""

import time

import pytest

from tests.e2e.container import Container
from tests.e2e.daq import record

pytestmark = pytest.mark.e2e


def test_purge_leaves_user_recorded_data_and_run_state_and_nothing_else(
        machine: Container) -> None:
    # whatever the writer recorded, and one more file the writer did not make: all of it stays
    machine.write("/var/lib/ssdaq/data/e2e-sentinel", "recorded\n")
    data = machine.run("find", "/var/lib/ssdaq/data", "-type", "f").stdout.split()
    machine.write("/etc/credstore/teldata-db-password", "secret\n", mode=0o600)
    t0 = time.monotonic()
    machine.run("apt-get", "purge", "-y", "-q", "ssdaq")
    record(machine, "purge", f"{time.monotonic() - t0:.1f} s")
    machine.run("systemctl", "daemon-reload")
    units = machine.run(
        "find",
        "/lib/systemd/system",
        "/etc/systemd/system",
        "/run/systemd/system",
        "-name",
        "*ssdaq*",
    ).stdout
    assert units == ""
    assert (
        machine.run("systemctl", "list-units", "--all", "--plain", "--no-legend", "ssdaq*").stdout
        == ""
    )
    for gone in (
        "/etc/ssdaq",
        "/run/ssdaq",
        "/etc/credstore/teldata-db-password",
        "/var/lib/ssdaq/readout",
    ):
        assert not machine.exists(gone), gone
    assert machine.run("ls", "/var/lib/ssdaq").stdout.split() == ["data", "run"]
    assert machine.run("find", "/var/lib/ssdaq/data", "-type", "f").stdout.split() == data
    machine.run("getent", "passwd", "ssdaq")
