"""ssdaq-sim trigger: the camera's trigger packets, at the asked rate, as many as asked."""

import socket
import subprocess
import time

import pytest

from ssdaq.core.errors import EX_USAGE
from ssdaq.data import trigger
from ssdaq.simulators.trigger import PacketMaker, TriggerSimConfig, simulate
from tests.conftest import child_env
from tests.simulators import sim_argv


@pytest.fixture
def listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.settimeout(2)
    yield s
    s.close()


def sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sim_argv("trigger", *args),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("version, size", [(1, 1115), (2, 93 + 64 * 32), (3, 93 + 7 * 32 // 8)])
def test_cli_sends_the_asked_packets_and_says_so(
    listener: socket.socket, version: int, size: int
) -> None:
    port = listener.getsockname()[1]
    done = sim(
        "--version",
        str(version),
        "--count",
        "50",
        "--rate",
        "1000",
        "--port",
        str(port),
        "--samples",
        "32",
        "--sps",
        "7",
        "--tack0",
        "5000",
        "--busy-every",
        "10",
    )
    assert done.returncode == 0, done.stderr
    assert f"sent 50 V{version} packets ({size} B)" in done.stdout
    packets = [trigger.unpack(listener.recv(70000)) for _ in range(50)]
    assert [p.tack_time for p in packets] == [5000 + k * 1_000_000 for k in range(50)]
    assert [p.ro_count for p in packets] == list(range(50))
    assert [k for k, p in enumerate(packets) if p.busy] == [9, 19, 29, 39, 49]
    if version > 1:
        assert all(p.readout_length == 32 and p.trigg_union.sum() == 7 for p in packets)


def test_packets_follow_the_rate(listener: socket.socket) -> None:
    cfg = TriggerSimConfig(rate=200, count=100)
    t0 = time.monotonic()
    summary = simulate(cfg, "127.0.0.1", listener.getsockname()[1])
    elapsed = time.monotonic() - t0
    assert summary.sent == 100 and 0.45 < elapsed < 2.0, elapsed  # never faster than the rate
    make = PacketMaker(cfg)
    assert [listener.recv(2000) for _ in range(100)] == [make(k) for k in range(100)]


def test_duration_sets_the_count(listener: socket.socket) -> None:
    done = sim("--duration", "0.2", "--rate", "100", "--port", str(listener.getsockname()[1]))
    assert "sent 20 V1 packets" in done.stdout


@pytest.mark.parametrize(
    "args",
    [["--samples", "12"], ["--version", "4"], ["--rate", "-1"], ["--duration", "1", "--rate", "0"]],
)
def test_bad_arguments_are_a_usage_error(args: list[str]) -> None:
    done = sim(*args, "--port", "9")
    assert done.returncode == EX_USAGE, done.stderr
    assert "error:" in done.stderr or "needs a --rate" in done.stderr
