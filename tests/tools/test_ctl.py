"""ssdaqctl status/start/stop/restart against live receivers on loopback (no systemd here)."""

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import zmq

from ssdaq import daemons, verbs
from ssdaq.simulators.tm import TMSimConfig, simulate
from ssdaq.tools import ctl
from tests.conftest import child_env, ctl_argv, free_port, receiver_argv
from tests.livepub import readout

pytestmark = pytest.mark.skipif(daemons.managed_by_systemd(),
                                reason="ssdaq's units are installed under this host's systemd: "
                                       "ssdaqctl would act on them")


BUILTINS = ["readout", "trigger", "timestamp", "log", "monitor", "teldata"]


def run_ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ctl_argv(*args), env=child_env(), capture_output=True, text=True,
                          timeout=60)


def readout_config(port: int, pub_port: int) -> str:
    return (f"start_hold_s = 0.0\n[monitor]\nenabled = false\n[assembler]\nmodule_timeout_s = 2.0\n"
            f'[sockets.data]\nip = "127.0.0.1"\nport = {port}\n'
            f'[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\n')


def test_status_without_systemd_lists_the_builtins_as_not_running(runtime_dir: Path) -> None:
    done = run_ctl("status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "HEALTH", "IN/S", "OUT/S", "LAST", "DATA",
                                "ABSENT", "STATUS"]
    assert [line.split()[0] for line in lines[1:7]] == BUILTINS
    assert all("not running" in line for line in lines[1:7])
    assert "systemd does not manage ssdaq here" in lines[-1]


def test_status_shows_rates_last_data_and_absent_modules_of_live_receivers(
        start_receiver, start_writer, publisher, runtime_dir: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", readout_config(port, pub_port))
    pub = publisher()
    writer = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.1)
    pub.wait_subscriber()
    pub.send(readout(1).pack())
    writer.wait(lambda s: s["counters"]["written"] == 1)
    sim = TMSimConfig(modules=30, rate=20, records_per_packet=2, duration=8.0)
    feeder = threading.Thread(target=simulate, args=(sim, "127.0.0.1", port))
    feeder.start()  # still sending while status is asked
    rx.wait(lambda s: s["absent_modules"] == [30, 31] and s["rates"]["received"] > 0)
    done = run_ctl("status", "--json")
    text = run_ctl("status").stdout
    feeder.join()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["systemd"] is False
    states = {r["name"]: r for r in report["receivers"]}
    assert list(states)[:6] == BUILTINS and "writer-readout" in states
    ro = states["readout"]
    assert ro["running"] and ro["health"] == "ok" and ro["absent_modules"] == [30, 31]
    assert 0 <= ro["last_data_s_ago"] < 5 and ro["status"]["counters"]["received"] > 0
    assert ro["unit"] == "ssdaq-readout.service" and ro["unit_state"] is None
    assert states["writer-readout"]["unit"] == "ssdaq-writer@readout.service"
    assert states["writer-readout"]["status"]["counters"]["written"] == 1
    assert not states["trigger"]["running"] and states["trigger"]["health"] == "not running"
    [line] = [x for x in text.splitlines() if x.startswith("readout ")]
    assert "running" in line and " ok " in line and "30,31" in line and "ro/s" in line


def test_a_receiver_that_does_not_answer_makes_status_fail(runtime_dir: Path) -> None:
    ctx = zmq.Context()
    mute = ctx.socket(zmq.ROUTER)  # a command socket whose owner never replies
    mute.bind(f"ipc://{runtime_dir / 'trigger.ctl'}")
    try:
        done = run_ctl("status", "--timeout", "0.5")
    finally:
        mute.close(linger=0)
        ctx.term()
    assert done.returncode == ctl.EXIT_REFUSED
    [line] = [x for x in done.stdout.splitlines() if x.startswith("trigger ")]
    assert "no answer" in line and "within 0.5 s" in line


def test_start_where_systemd_runs_without_ssdaq_units_says_so(monkeypatch, capsys) -> None:
    """A workstation running receivers from a checkout (systemd as PID 1 patched in: CI has none)."""
    monkeypatch.setattr(daemons, "systemd_running", lambda: True)
    monkeypatch.setattr(daemons, "units_installed", lambda: False)
    assert ctl.unit_action("start", "readout") == 69
    assert ("ssdaq's units are not installed (no ssdaq.target), so there is no unit to start"
            in capsys.readouterr().err)


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_start_stop_restart_say_clearly_that_systemd_is_absent(action: str) -> None:
    done = run_ctl(action, "readout")
    assert done.returncode == 69
    why = ("ssdaq's units are not installed (no ssdaq.target)" if daemons.systemd_running()
           else "systemd is not running on this host")
    assert f"{why}, so there is no unit to {action}" in done.stderr
    assert "ssdaq-receiver readout" in done.stderr


def test_every_verb_of_the_table_has_a_handler_and_is_in_the_help() -> None:
    shown = subprocess.run(ctl_argv("--help"), env=child_env(), capture_output=True, text=True,
                           timeout=60, check=True).stdout
    for verb in verbs.VERBS:
        assert callable(getattr(ctl, f"verb_{verb.name}")), verb.name
        assert f"{verb.name}: {verb.help.split()[0]}" in " ".join(shown.split()), verb.name


@pytest.mark.parametrize("verb", verbs.NAMES)
def test_ssdaq_receiver_refuses_a_verb_as_a_receiver_name(verb: str) -> None:
    done = subprocess.run(receiver_argv(verb), env=child_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 64 and f"{verb!r} is reserved for ssdaqctl" in done.stderr


def test_start_needs_exactly_one_name() -> None:
    assert run_ctl("start").returncode == 64
    assert run_ctl("stop", "readout", "trigger").returncode == 64


def test_units_follow_the_socket_rules() -> None:
    assert ctl.units_for("stop", "readout") == ["ssdaq-readout.socket", "ssdaq-readout.service"]
    assert ctl.units_for("start", "trigger") == ["ssdaq-trigger.socket", "ssdaq-trigger.service"]
    assert ctl.units_for("restart", "readout") == ["ssdaq-readout.service"], \
        "a restart keeps the socket open so that nothing sent meanwhile is lost"
    assert ctl.units_for("stop", "monitor") == ["ssdaq-monitor.service"]
    assert ctl.units_for("start", "writer-readout") == ["ssdaq-writer@readout.service"]
    assert ctl.units_for("stop", "all") == ["ssdaq.target"]
    assert ctl.units_for("start", "all")[-1] == "ssdaq.target"


@pytest.mark.parametrize("name", ["readout", "writer-trigger", "site1"])
def test_unit_names_round_trip(name: str) -> None:
    assert daemons.name_of(daemons.unit_of(name)) == name
    assert daemons.name_of("ssdaq.target") is None and daemons.name_of("ssdaq-x.socket") is None


def test_commands_still_go_to_one_receiver(start_receiver, runtime_dir: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    start_receiver("readout", readout_config(port, pub_port))
    done = run_ctl("readout", "ping")
    assert done.returncode == 0 and json.loads(done.stdout) == {"ok": True, "result": "pong"}
    assert run_ctl("trigger", "ping").returncode == ctl.EXIT_NO_ANSWER
