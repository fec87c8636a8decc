"""ssdaq-sim timing: a timing-board PUB of TriggerBunch messages, as many as asked, at the rate."""

import socket
import subprocess
import time

import zmq

from ssdaq.data.messages import TriggerBunch
from ssdaq.simulators.timing import TimingSimConfig, bunch
from tests.conftest import child_env, free_port
from tests.simulators import sim_argv


def test_cli_publishes_the_asked_bunches_once_subscribed() -> None:
    port = free_port(socket.SOCK_STREAM)
    sim = subprocess.Popen(
        sim_argv(
            "timing",
            "--bind",
            f"tcp://127.0.0.1:{port}",
            *"--rate 100 --count 30 --triggers 5 --wait-subscriber 10".split(),
        ),
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 10000)
        sub.connect(f"tcp://127.0.0.1:{port}")
        first = TriggerBunch.FromString(sub.recv())
        t0 = time.monotonic()
        got = [first] + [TriggerBunch.FromString(sub.recv()) for _ in range(29)]
        elapsed = time.monotonic() - t0
    finally:
        ctx.destroy(linger=0)
    out, _ = sim.communicate(timeout=10)
    assert "published 30 TriggerBunch messages (150 triggers)" in out
    assert [b.bunch_counter for b in got] == list(range(30))
    assert [t.event_counter for b in got for t in b.triggers] == list(range(150))
    assert 0.25 < elapsed < 3.0, elapsed  # 29 intervals of 10 ms, never fewer


def test_bunches_are_reproducible_and_their_times_follow_the_rate() -> None:
    cfg = TimingSimConfig(rate=10, count=3, triggers=4, t0_ns=1_000_000_000_000_000_000)
    b = bunch(cfg, 2)
    assert b == bunch(cfg, 2) and b.bunch_counter == 2
    times = [t.time.seconds * 10**12 + t.time.pico_seconds for t in b.triggers]
    assert [t - times[0] for t in times] == [0, 25 * 10**9, 50 * 10**9, 75 * 10**9]  # 25 ms apart
    assert times[0] == 10**21 + 2 * 10**11  # bunch 2 starts 0.2 s in
    assert b.arrival_time.seconds * 10**12 + b.arrival_time.pico_seconds == times[-1]


def test_without_a_subscriber_it_says_so_and_sends_anyway() -> None:
    port = free_port(socket.SOCK_STREAM)
    done = subprocess.run(
        sim_argv(
            "timing",
            "--bind",
            f"tcp://127.0.0.1:{port}",
            *"--count 2 --wait-subscriber 0.2".split(),
        ),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0
    assert "no subscriber within 0.2 s" in done.stdout and "published 2 TriggerBunch" in done.stdout
