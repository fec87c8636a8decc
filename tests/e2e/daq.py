"""What the end-to-end tests know about the installed DAQ, and the figures they report.

Unit names, the simulator command line, a subscriber run inside the container (probe.py), and
``record()``: measured figures printed at the end of the session (conftest).
"""

import itertools
import json
import subprocess
from pathlib import Path

from ssdaq import streams
from tests.e2e.container import Container

#: measured figures, printed at the end of the session
TIMINGS: dict[str, str] = {}


def record(c: Container, name: str, value: str) -> None:
    """A figure measured on ``c``, reported under its label."""
    TIMINGS[f"{c.label}: {name}"] = value


#: the packaged receivers (ssdaq-NAME.service), readout first; those with an ssdaq-NAME.socket
RECEIVERS = tuple(s.name for s in streams.STREAMS if s.has_unit)
SOCKETS = tuple(s.name for s in streams.STREAMS if s.socket_unit)
READOUT_PUB = streams.endpoint("readout")
ALL_MODULES = (1 << 32) - 1
#: 32 simulated TARGET modules on the readout socket, 10 readouts/s, 10 records per datagram
SIM_RATE_HZ = 10
SIM = tuple(
    f"ssdaq-sim tm --modules 32 --rate {SIM_RATE_HZ} --records-per-packet 10 "
    f"--port {streams.get('readout').input_port}".split()
)
SITE_RECEIVER = Path(__file__).with_name("site_receivers.py")


def active(c: Container, unit: str) -> bool:
    """Up: a service running, a socket listening (or "running": its service has it)."""
    props = c.show(unit, "ActiveState", "SubState")
    up = ("listening", "running") if unit.endswith(".socket") else ("running",)
    return props["ActiveState"] == "active" and props["SubState"] in up


def ensure_listening(c: Container) -> None:
    """Back to the state after installation: sockets listening, the receivers' services stopped.

    The sockets are closed too, first: data still queued on one would start its service again,
    even while a stop job for both is running.
    """
    c.run("systemctl", "stop", *(f"ssdaq-{n}.socket" for n in SOCKETS))
    c.run("systemctl", "stop", *(f"ssdaq-{n}.service" for n in RECEIVERS))
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


def record_coverage(got: list[list], sent: dict, rate_hz: float = SIM_RATE_HZ
                    ) -> tuple[set, set, int, int]:
    """Which of the simulator's records the published readouts hold: (lost, published twice,
    how many were sent, readout numbers skipped). ``sent`` is ``ssdaq-sim tm --json``'s summary
    of a run at ``rate_hz``.
    """
    seen: dict[tuple[int, int], int] = {}
    for _, _, _, tack, mask in got:
        for module in range(32):
            if mask >> module & 1:
                seen[module, tack] = seen.get((module, tack), 0) + 1
    period_ns = round(1e9 / rate_hz)
    expected = {
        (m, sent["tack0"] + k * period_ns) for m in range(32) for k in range(sent["readouts"])
    }
    numbers = [r[2] for r in got]
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(numbers) if b > a + 1)
    return expected - seen.keys(), {k for k, n in seen.items() if n > 1}, len(expected), gaps


def reconnect_window(events: list[list], since: float) -> float | None:
    """Seconds from the subscriber's disconnect (after ``since``) to its next handshake."""
    down = next((t for t, e in events if e == "disconnected" and t >= since), None)
    if down is None:
        return None
    return next((t - down for t, e in events if e == "handshake" and t > down), None)
