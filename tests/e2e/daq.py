"""What the end-to-end tests know about the installed DAQ, and the figures they report.

Unit names, the simulator command line, a subscriber run inside the container (probe.py), and
``record()``: measured figures printed at the end of the session (conftest).
"""

import json
import subprocess
from pathlib import Path

from tests.e2e.container import Container

#: measured figures, printed at the end of the session
TIMINGS: dict[str, str] = {}


def record(name: str, value: str) -> None:
    TIMINGS[name] = value


RECEIVERS = ("readout", "trigger", "log", "timestamp", "monitor", "teldata")
SOCKETS = ("readout", "trigger", "log")
READOUT_PUB = "tcp://127.0.0.101:9004"
ALL_MODULES = (1 << 32) - 1
#: 32 simulated TARGET modules on the readout socket, 10 readouts/s, 10 records per datagram
SIM_RATE_HZ = 10
SIM = tuple(
    f"ssdaq-sim tm --modules 32 --rate {SIM_RATE_HZ} --records-per-packet 10 --port 17000".split()
)
SITE_RECEIVER = Path(__file__).with_name("site_receivers.py")


def active(c: Container, unit: str) -> bool:
    """Up: a service running, a socket listening (or "running": its service has it)."""
    props = c.show(unit, "ActiveState", "SubState")
    up = ("listening", "running") if unit.endswith(".socket") else ("running",)
    return props["ActiveState"] == "active" and props["SubState"] in up


def ensure_listening(c: Container) -> None:
    """Back to the state after installation: sockets listening, the receivers' services stopped.

    The sockets are closed too, or data still queued on one would start its service again.
    """
    services = (f"ssdaq-{n}.service" for n in RECEIVERS)
    c.run("systemctl", "stop", *services, *(f"ssdaq-{n}.socket" for n in SOCKETS))
    c.run("systemctl", "reset-failed", "ssdaq-*")
    c.run("systemctl", "start", *(f"ssdaq-{n}.socket" for n in SOCKETS))


def subscribe(
    c: Container, endpoint: str, seconds: float, idle_s: float = 2.0
) -> subprocess.Popen[str]:
    """Start probe.py's subscriber inside; returns the process once it is connecting."""
    proc = c.spawn(
        "python3",
        "/root/probe.py",
        "subscribe",
        endpoint,
        "--seconds",
        str(seconds),
        "--idle-s",
        str(idle_s),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def collected(proc: subprocess.Popen[str], timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def messages(entries: list[dict[str, str]]) -> str:
    """The MESSAGE lines of journal entries."""
    return "\n".join(str(e.get("MESSAGE", "")) for e in entries)


def readouts(result: dict) -> list[list]:
    """[t, size, number, tack, module_mask] of the SSReadout messages."""
    return [m for m in result["messages"] if m[2] is not None]
