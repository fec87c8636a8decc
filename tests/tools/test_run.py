"""Observations through ``ssdaqctl run`` against live writers, receivers fed by the simulators."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tables

from ssdaq import daemons, runs
from ssdaq.io import provenance, reader
from ssdaq.io.files import PART
from tests.conftest import child_env, ctl_argv, free_port
from tests.livepub import readout
from tests.receivers.test_writer import fill, small_disk  # noqa: F401  (a fixture)
from tests.tools.test_ctl import readout_config

pytestmark = pytest.mark.skipif(daemons.managed_by_systemd(),
                                reason="ssdaq's units are installed under this host's systemd: "
                                       "ssdaqctl would act on them")
RUN_NAME = re.compile(r"^(readout|trigger)_obs000123_\d{8}T\d{6}Z_(\d{3})\.hdf5$")
FAST_LEDGER = {"ledger": {"poll_interval_s": 0.2}}


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ctl_argv(*args), env=child_env(), capture_output=True, text=True,
                          timeout=60)


def sim(*args: str) -> dict:
    """Run a simulator, its TACKs starting now (so that two runs never share a TACK)."""
    tack0 = ["--tack0", str(time.time_ns())] if args[0] == "tm" else []
    done = subprocess.run([sys.executable, "-m", "ssdaq.simulators.cli", *args, *tack0, "--json"],
                          env=child_env(), capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def run_files(directory: Path, prefix: str = "readout") -> list[Path]:
    return [p for p in reader.data_files(directory, prefix) if "_obs" in p.name]


def ledger_delta(info: dict, source: str, counter: str) -> int:
    return sum(r["delta"] for r in info["ledger"]
               if r["source"] == source and r["counter"] == counter)


def test_a_run_switches_every_writer_names_its_files_and_they_say_what_they_hold(
        start_receiver, start_writer, publisher, run_state: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", readout_config(port, pub_port))
    w = start_writer("readout", {"readout": f"tcp://127.0.0.1:{pub_port}", "teldata": ""},
                     flush_interval_s=0.1, tables=FAST_LEDGER)
    trig_pub = publisher()
    tw = start_writer("trigger", {"trigger": trig_pub.endpoint}, directory=w.directory.parent / "trig",
                      tables={"run": {"record": "runs"}})
    trig_pub.wait_subscriber()
    sim("tm", "--port", str(port), "--rate", "50", "--duration", "0.4")  # outside the run
    w.wait(lambda s: s["counters"]["written"] == 20)
    assert tw.status()["status_line"].startswith("no observation open: not recording")

    started = ctl("run", "start", "--obs-id", "123", "--comment", "Crab, moon up", "--json")
    assert started.returncode == 0, started.stderr
    reply = json.loads(started.stdout)
    assert reply["run"]["obs_id"] == 123 and reply["run"]["comment"] == "Crab, moon up"
    stamp = runs.stamp(reply["run"]["start_ns"])
    assert reply["writers"]["writer-readout"]["file"] == f"readout_obs000123_{stamp}_000{PART}"
    assert reply["writers"]["writer-trigger"]["file"] == f"trigger_obs000123_{stamp}_000{PART}"
    [before] = reader.data_files(w.directory)
    assert re.fullmatch(r"readout_\d{8}_\d{6}\.hdf5", before.name), "outside runs: as before"

    summary = sim("tm", "--port", str(port), "--rate", "50", "--duration", "0.6")
    w.wait(lambda s: s["counters"]["written"] == 20 + summary["readouts"])
    status = ctl("run", "status", "--json")
    assert json.loads(status.stdout)["writers"]["writer-readout"]["obs_id"] == 123
    stopped = ctl("run", "stop")
    assert stopped.returncode == 0 and "observation 123 ended" in stopped.stdout, stopped.stderr
    assert ctl("run", "stop").returncode == 1, "no run is open any more"

    [chunk] = run_files(w.directory)
    assert chunk.name == f"readout_obs000123_{stamp}_000.hdf5"
    assert len(reader.read_table(chunk)) == summary["readouts"]
    [empty] = run_files(tw.directory, "trigger")  # the trigger writer recorded an empty run
    assert len(reader.read_table(empty, "/Trigger/packet")) == 0
    for path in (before, chunk, empty):
        done = subprocess.run(["sha256sum", "-c", f"{path.name}.sha256"], cwd=path.parent,
                              capture_output=True, text=True)
        assert done.returncode == 0 and f"{path.name}: OK" in done.stdout

    info = provenance.read(chunk)
    a = info["attributes"]
    assert (a["obs_id"], a["chunk"], a["comment"], a["stream"]) == (123, 0, "Crab, moon up", "readout")
    assert a["run_start_utc"] == reply["run"]["start_utc"] and a["rows"] == summary["readouts"]
    assert a["first_row_utc"] <= a["last_row_utc"] and a["opened_utc"] < a["closed_utc"]
    assert "[assembler]" in a["config_readout"] and "module_timeout_s = 2.0" in a["config_readout"]
    assert '[run]\n' in a["writer_config"] and a["upstream"] == "readout"
    assert ledger_delta(info, "readout", "complete") == summary["readouts"]
    assert ledger_delta(info, "writer-readout", "written") == summary["readouts"]
    assert not provenance.losses(info["ledger"]) and info["gaps"] == []
    assert provenance.read(empty)["attributes"]["upstream_unanswered"] == "trigger"
    assert provenance.read(before)["attributes"]["obs_id"] == provenance.NO_OBS
    with tables.open_file(chunk) as f:  # PyTables reads the provenance as its own nodes
        assert f.root.Provenance._v_attrs.obs_id == 123
        assert f.root.Provenance._v_attrs.comment == "Crab, moon up"
        ledger = f.root.Provenance.ledger.read()
        assert len(ledger) == len(info["ledger"]) and f.root.Provenance.gaps.nrows == 0
    shown = subprocess.run([sys.executable, "-m", "ssdaq.tools.info", str(chunk)],
                           env=child_env(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "observation 123 chunk 0: Crab, moon up" in shown.stdout
    assert "nothing lost" in shown.stdout
    as_json = subprocess.run([sys.executable, "-m", "ssdaq.tools.info", "--json", str(chunk)],
                             env=child_env(), capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["attributes"]["obs_id"] == 123
    for d in (w, tw):
        d.stop()
    rx.stop()


def test_the_ledger_counts_what_the_simulator_did_and_a_restart_adds_an_entry(
        start_receiver, start_writer, run_state: Path, tmp_path: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    config = readout_config(port, pub_port).replace("[assembler]\n", "[assembler]\nmax_wait_s = 0.2\n")
    rx = start_receiver("readout", config)
    w = start_writer("readout", {"readout": f"tcp://127.0.0.1:{pub_port}", "teldata": ""},
                     flush_interval_s=0.1, tables=FAST_LEDGER)
    assert ctl("run", "start").returncode == 0
    done = sim("tm", "--port", str(port), "--rate", "50", "--duration", "2", "--loss", "0.01",
               "--late", "0.01", "--duplicate", "0.01", "--late-delay", "0.5", "--seed", "7")
    assert done["lost"] and done["late"] and done["duplicated"], done
    rx.wait(lambda s: s["counters"]["late"] == done["late_records"])
    first_pid = rx.status()["pid"]
    time.sleep(0.5)  # the writer's ledger polls the receiver's final counts
    rx.stop()
    rx = start_receiver("readout", config)  # a new process inside the file's interval
    again = sim("tm", "--port", str(port), "--rate", "50", "--duration", "0.4")
    w.wait(lambda s: s["counters"]["written"] == done["readouts"] + again["readouts"])
    time.sleep(0.5)
    assert ctl("run", "stop").returncode == 0
    [chunk] = run_files(w.directory)
    info = provenance.read(chunk)
    pids = {r["pid"] for r in info["ledger"] if r["source"] == "readout"}
    assert pids == {first_pid, rx.status()["pid"]}, "one entry per receiver process"
    assert all(r["delta"] >= 0 for r in info["ledger"])
    assert ledger_delta(info, "readout", "late") == done["late_records"]
    assert ledger_delta(info, "readout", "duplicate") == done["duplicated_records"]
    assert ledger_delta(info, "readout", "incomplete") == done["incomplete_readouts"]
    assert ledger_delta(info, "readout", "complete") == (
        done["readouts"] - done["incomplete_readouts"] + again["readouts"])
    second = [r for r in info["ledger"] if r["pid"] != first_pid and r["source"] == "readout"]
    assert all(r["at_open"] == 0 for r in second), "a process started inside counts from 0"
    losses = provenance.losses(info["ledger"])
    assert losses == {"readout late": done["late_records"],
                      "readout duplicate": done["duplicated_records"]}
    shown = subprocess.run([sys.executable, "-m", "ssdaq.tools.info", str(chunk)],
                           env=child_env(), capture_output=True, text=True, timeout=60)
    assert f"readout pid {first_pid}: " in shown.stdout and "nothing lost" not in shown.stdout
    assert re.search(rf"LOST duplicate {done['duplicated_records']}, late {done['late_records']}",
                     shown.stdout), shown.stdout
    w.stop()
    rx.stop()


def test_readouts_a_paused_writer_missed_are_gaps_in_its_file(
        start_receiver, start_writer, run_state: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    config = readout_config(port, pub_port).replace(f"port = {pub_port}\n",
                                                    f"port = {pub_port}\nsndhwm = 10\n").replace(
        "[assembler]\n", "[assembler]\nreadout_window_ns = 1000000\n")  # 400 readouts/s
    rx = start_receiver("readout", config)
    w = start_writer("readout", {"readout": f"tcp://127.0.0.1:{pub_port}", "teldata": ""},
                     flush_interval_s=0.1, tables={"inputs.readout": {"rcvhwm": 10}})
    assert ctl("run", "start").returncode == 0
    sim("tm", "--port", str(port), "--rate", "100", "--duration", "0.3")
    w.wait(lambda s: s["counters"]["written"] == 30)
    w.proc.send_signal(signal.SIGSTOP)  # its subscription stops taking messages: the PUB drops
    try:
        sim("tm", "--port", str(port), "--rate", "400", "--duration", "2.5")
    finally:
        w.proc.send_signal(signal.SIGCONT)
    sim("tm", "--port", str(port), "--rate", "100", "--duration", "0.3")
    published = rx.status()["counters"]["published"]
    status = w.wait(lambda s: s["sequence"]["last"] == published)
    assert ctl("run", "stop").returncode == 0
    [chunk] = run_files(w.directory)
    gaps = provenance.read(chunk)["gaps"]
    missing = sum(g["missing"] for g in gaps)
    assert gaps and missing == status["sequence"]["missed"] > 0
    assert missing == published - len(reader.read_table(chunk)), "every missing readout is a gap"
    assert all(g["kind"] == "gap" and g["column"] == "iro" for g in gaps)
    w.stop()
    rx.stop()


def test_a_writer_restarted_during_a_run_continues_it_in_the_next_chunk(
        start_writer, publisher, run_state: Path) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.1,
                     max_file_bytes=200_000,
                     compression_level=0)
    pub.wait_subscriber()
    assert ctl("run", "start", "--obs-id", "123").returncode == 0
    for i in range(1, 41):
        pub.send(readout(i).pack())
        time.sleep(0.01)
    w.wait(lambda s: s["counters"]["written"] == 40)
    w.stop()
    pub = publisher()  # (an XPUB does not tell a second subscription of the same topic)
    again = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.1)
    assert again.status()["run"]["obs_id"] == 123, "it joined the open run at start"
    pub.wait_subscriber()
    for i in range(41, 46):
        pub.send(readout(i).pack())
    again.wait(lambda s: s["counters"]["written"] == 5)
    assert ctl("run", "stop").returncode == 0
    names = [p.name for p in run_files(w.directory)]
    chunks = [int(RUN_NAME.match(n)[2]) for n in names]
    assert len(names) >= 3 and chunks == list(range(len(names))), names
    rows = np.concatenate([reader.read_table(w.directory / n) for n in names])
    assert rows["iro"].tolist() == list(range(1, 46))
    with h5py.File(w.directory / names[-1]) as f:
        assert f["Provenance"].attrs["chunk"] == chunks[-1]
    again.stop()


def test_a_run_ends_the_open_one_and_ids_are_never_reused(run_state: Path, runtime_dir: Path) -> None:
    assert ctl("run", "start", "--obs-id", "7").returncode == 0
    done = ctl("run", "start")
    assert done.returncode == 0 and "observation 7 ended" in done.stdout
    assert "observation 8 started" in done.stdout
    refused = ctl("run", "start", "--obs-id", "8")
    assert refused.returncode == 1 and "never reused" in refused.stderr
    for bad in ("abc", "-1", "1000000", "1.5"):
        assert ctl("run", "start", "--obs-id", bad).returncode == 64, bad
    assert ctl("run", "stop", "--obs-id", "9").returncode == 64
    assert ctl("run", "pause").returncode == 64
    assert ctl("run", "stop").returncode == 0
    assert ctl("run", "stop").returncode == 1
    state = json.loads(run_state.read_text())
    assert state["run"] is None and state["next_obs_id"] == 9 and state["last"]["obs_id"] == 8
    assert run_state.stat().st_mode & 0o777 == 0o660


def test_a_writer_that_does_not_answer_is_named_and_the_others_switch(
        start_writer, publisher, run_state: Path, runtime_dir: Path) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.1)
    (runtime_dir / "writer-trigger.ctl").touch()  # a socket nobody serves
    done = ctl("run", "start", "--timeout", "0.5")
    assert done.returncode == 2 and "writer-trigger did not switch" in done.stderr
    assert "writer-readout: readout_obs000001_" in done.stdout
    assert w.status()["run"]["obs_id"] == 1
    os.unlink(runtime_dir / "writer-trigger.ctl")
    assert ctl("run", "stop").returncode == 0
    w.stop()


def test_a_full_disk_during_a_run_stops_before_the_reserve_and_resumes_in_its_next_chunk(
        start_writer, publisher, run_state: Path, small_disk: Path) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, directory=small_disk,
                     flush_interval_s=0.1, compression_level=0, min_free_bytes=2_000_000)
    pub.wait_subscriber()
    assert ctl("run", "start", "--obs-id", "123").returncode == 0
    sent = [readout(i) for i in range(1, 201)]
    for r in sent[:10]:
        pub.send(r.pack())
    w.wait(lambda s: s["counters"]["written"] == 10)
    filler = fill(small_disk, 2_500_000)
    for r in sent[10:]:  # 1.6 MB: more than the reserve allows
        pub.send(r.pack())
    status = w.wait(lambda s: s["disk_full"] and s["counters"]["received"] == 200
                    and s["file"] is None)  # closed once the counters at its end were read
    assert status["status_line"].startswith("DISK FULL")
    assert [p.name for p in run_files(small_disk)][-1].endswith("_000.hdf5"), "closed, complete"
    filler.unlink()
    w.wait(lambda s: not s["disk_full"] and s["counters"]["written"] == 200)
    assert ctl("run", "stop").returncode == 0
    names = [p.name for p in run_files(small_disk)]
    assert [int(RUN_NAME.match(n)[2]) for n in names] == [0, 1], names
    rows = np.concatenate([reader.read_table(small_disk / n) for n in names])
    assert rows["iro"].tolist() == list(range(1, 201)), "nothing lost: held, then written"
    assert provenance.read(small_disk / names[1])["attributes"]["obs_id"] == 123
    w.stop()
