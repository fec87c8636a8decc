"""The .deb under a real systemd: install, every receiver under its hardening, issue 5's checks 1-8.

The tests share one container (session fixture ``machine``) and run in file order; each leaves
the units as it found them (sockets listening), except the last, which purges the package.
"""

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import record
from tests.e2e.container import Container, wait_until

pytestmark = pytest.mark.e2e

RECEIVERS = ("readout", "trigger", "log", "timestamp", "monitor", "teldata")
SOCKETS = ("readout", "trigger", "log")
READOUT_PUB = "tcp://127.0.0.101:9004"
ALL_MODULES = (1 << 32) - 1
#: 32 simulated TARGET modules on the readout socket, 10 readouts/s, 10 records per datagram
SIM_RATE_HZ = 10
SIM = ("ssdaq-sim", "tm", "--modules", "32", "--rate", str(SIM_RATE_HZ), "--records-per-packet",
       "10", "--port", "17000")
SITE_RECEIVER = Path(__file__).with_name("site_receivers.py")


def active(c: Container, unit: str) -> bool:
    return c.show(unit, "ActiveState", "SubState") == {"ActiveState": "active",
                                                       "SubState": _running_substate(unit)}


def _running_substate(unit: str) -> str:
    return "listening" if unit.endswith(".socket") else "running"


def ensure_listening(c: Container) -> None:
    """Back to the state after installation: sockets listening, the receivers' services stopped."""
    c.run("systemctl", "stop", *(f"ssdaq-{n}.service" for n in RECEIVERS))
    c.run("systemctl", "reset-failed", "ssdaq-*")
    c.run("systemctl", "start", *(f"ssdaq-{n}.socket" for n in SOCKETS))


def subscribe(c: Container, endpoint: str, seconds: float, idle_s: float = 2.0):
    """Start probe.py's subscriber inside; returns the process once it is connecting."""
    proc = c.spawn("python3", "/root/probe.py", "subscribe", endpoint, "--seconds", str(seconds),
                   "--idle-s", str(idle_s))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def collected(proc, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def readouts(result: dict) -> list[list]:
    """[t, size, number, tack, module_mask] of the SSReadout messages."""
    return [m for m in result["messages"] if m[2] is not None]


# ------------------------------------------------------------------------------- installation

def test_install_creates_the_user_and_starts_only_the_sockets(machine: Container) -> None:
    assert machine.run("getent", "passwd", "ssdaq").stdout.split(":")[6].strip() == "/usr/sbin/nologin"
    machine.run("getent", "group", "ssdaq")
    for name in SOCKETS:
        assert active(machine, f"ssdaq-{name}.socket"), machine.run(
            "systemctl", "status", f"ssdaq-{name}.socket", check=False).stdout
    for name in RECEIVERS:
        assert machine.prop(f"ssdaq-{name}.service", "ActiveState") == "inactive"
        assert machine.prop(f"ssdaq-{name}.service", "UnitFileState") == "enabled"
    conffiles = machine.run("dpkg-query", "-W", "-f=${Conffiles}", "ssdaq").stdout
    for name in RECEIVERS:
        assert f"/etc/ssdaq/{name}.toml" in conffiles


def test_installed_units_pass_systemd_analyze_verify(machine: Container) -> None:
    """With the real binaries and man pages installed: any output at all is a failure."""
    units = machine.run("sh", "-c", "ls /lib/systemd/system/ssdaq*").stdout.split()
    named = [u for u in units if "@" not in u]
    assert len(named) == 2 * len(RECEIVERS) - 3 + 1 + 0  # services, sockets, target
    proc = machine.run("systemd-analyze", "verify", *named, "ssdaq-writer@readout.service",
                       check=False)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_socket_receive_buffer_is_the_units(machine: Container) -> None:
    for name in SOCKETS:
        assert machine.prop(f"ssdaq-{name}.socket", "ReceiveBuffer") == str(16 * 1024 * 1024)


# ------------------------------------------------------------------------------- hardening

def test_every_receiver_runs_under_its_hardening(machine: Container) -> None:
    """ssdaq.target brings up all six; each stays up and answers while confined."""
    machine.run("systemctl", "start", "ssdaq.target")
    for name in RECEIVERS:
        wait_until(f"ssdaq-{name}.service running", lambda: active(machine, f"ssdaq-{name}.service"),
                   timeout=15)
    time.sleep(3)  # past several WATCHDOG_USEC/2 ticks and any syscall a filter would kill
    for name in RECEIVERS:
        unit = f"ssdaq-{name}.service"
        props = machine.show(unit, "ActiveState", "NRestarts", "User", "NoNewPrivileges")
        assert props == {"ActiveState": "active", "NRestarts": "0", "User": "ssdaq",
                         "NoNewPrivileges": "yes"}, (unit, props)
        reply = machine.run("ssdaqctl", name, "ping")
        assert json.loads(reply.stdout)["ok"] is True
    score = machine.run("systemd-analyze", "security", "--no-pager",
                        *(f"ssdaq-{n}.service" for n in RECEIVERS)).stdout
    record("security exposure (live units)", " ".join(
        line.split()[1] for line in score.splitlines()[1:] if line.startswith("ssdaq-")))


def test_stopping_the_target_stops_every_receiver_and_socket(machine: Container) -> None:
    machine.run("systemctl", "stop", "ssdaq.target")
    for name in RECEIVERS:
        assert machine.prop(f"ssdaq-{name}.service", "ActiveState") == "inactive"
    for name in SOCKETS:
        # PartOf=ssdaq.target: otherwise the next datagram would start the receiver again
        assert machine.prop(f"ssdaq-{name}.socket", "ActiveState") == "inactive"
    ensure_listening(machine)


def test_zmq_tcp_bind_needs_af_netlink(machine: Container) -> None:
    """The control for RestrictAddressFamilies=: without AF_NETLINK libzmq cannot bind TCP.

    If this starts passing with the family removed, AF_NETLINK may go from the units.
    """
    dropin = "/run/systemd/system/ssdaq-monitor.service.d/no-netlink.conf"
    machine.write(dropin, "[Service]\nRestrictAddressFamilies=\n"
                          "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n")
    machine.run("systemctl", "daemon-reload")
    try:
        started = machine.run("systemctl", "start", "ssdaq-monitor.service", check=False)
        assert started.returncode != 0
        assert machine.prop("ssdaq-monitor.service", "ActiveState") in ("failed", "activating")
    finally:
        machine.run("systemctl", "stop", "ssdaq-monitor.service")
        machine.run("rm", "-r", str(Path(dropin).parent))
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "reset-failed", "ssdaq-monitor.service")


# ------------------------------------------------------------------------------- 1. readout

def test_first_datagram_starts_readout_and_subscriber_gets_complete_readouts(machine: Container) -> None:
    ensure_listening(machine)
    assert machine.prop("ssdaq-readout.service", "ActiveState") == "inactive"
    sub = subscribe(machine, READOUT_PUB, seconds=30)
    t0 = time.monotonic()
    sim = machine.run(*SIM, "--duration", "4", timeout=30)
    result = collected(sub, timeout=40)
    assert active(machine, "ssdaq-readout.service"), "the first datagram did not start the service"
    ready_us = int(machine.prop("ssdaq-readout.service", "ActiveEnterTimestampMonotonic"))
    record("socket activation: first datagram -> READY=1", f"{ready_us / 1e6 - t0:.3f} s")
    got = readouts(result)
    complete = [r for r in got if r[4] == ALL_MODULES]
    assert len(complete) >= 2 * SIM_RATE_HZ, (sim.stdout, len(got), [hex(r[4]) for r in got[:5]])
    numbers = [r[2] for r in got]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "readout numbers skip"


def test_systemctl_start_runs_readout_with_its_socket(machine: Container) -> None:
    machine.run("systemctl", "stop", "ssdaq-readout.service")
    assert active(machine, "ssdaq-readout.socket")
    machine.run("systemctl", "start", "ssdaq-readout.service")
    assert active(machine, "ssdaq-readout.service")
    status = json.loads(machine.run("ssdaqctl", "readout", "status").stdout)["result"]
    assert status["name"] == "readout"


# ------------------------------------------------------------------------------- 2. status, journal

def test_status_text_and_journal_fields(machine: Container) -> None:
    text = wait_until("StatusText", lambda: machine.prop("ssdaq-readout.service", "StatusText"),
                      timeout=5)
    record("StatusText", text)
    entries = [json.loads(line) for line in machine.run(
        "journalctl", "-u", "ssdaq-readout.service", "-o", "json", "--no-pager").stdout.splitlines()]
    own = [e for e in entries if e.get("SSDAQ_RECEIVER") == "readout"]
    assert own, "no journal entry carries SSDAQ_RECEIVER=readout"
    assert all(e.get("SYSLOG_IDENTIFIER") == "ssdaq-readout" for e in own)
