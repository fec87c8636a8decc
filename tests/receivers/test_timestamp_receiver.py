"""TimestampReceiver as a process: bunches in, each trigger out alone, across board restarts."""

import socket
import subprocess
import time

import pytest
import zmq

from ssdaq.data.messages import TriggerBunch, TriggerMessage
from ssdaq.simulators.timing import TimingSimConfig, bunch, simulate
from tests.conftest import child_env, free_port, receiver_argv
from tests.receivers.conftest import CLASSES, QUIET, nothing_more, publisher_config, subscribe
from tests.simulators import sim_argv


def timestamp_config(board_port: int, pub_port: int) -> str:
    return (
        QUIET
        + publisher_config(pub_port)
        + (
            f'[timing_board]\nendpoint = "tcp://127.0.0.1:{board_port}"\n'
            "reconnect_ivl_s = 0.05\nreconnect_ivl_max_s = 0.3\n"
        )
    )


@pytest.fixture
def board(start_receiver, zmq_context):
    board_port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    running = start_receiver("timestamp", timestamp_config(board_port, pub_port))
    return running, board_port, subscribe(zmq_context, pub_port)


def expected(cfg: TimingSimConfig) -> list[bytes]:
    return [t.SerializeToString() for k in range(cfg.count) for t in bunch(cfg, k).triggers]


def run_board(port: int, count: int) -> subprocess.Popen:
    """``ssdaq-sim timing`` as its own process, sending once the receiver subscribed."""
    return subprocess.Popen(
        sim_argv(
            "timing",
            "--bind",
            f"tcp://127.0.0.1:{port}",
            "--count",
            str(count),
            *"--rate 200 --triggers 3 --wait-subscriber 10".split(),
        ),
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_each_trigger_of_each_bunch_is_published_on_its_own(board) -> None:
    running, port, sub = board
    cfg = TimingSimConfig(rate=500, count=50, triggers=4, t0_ns=1_700_000_000 * 10**9)
    summary = simulate(cfg, f"tcp://127.0.0.1:{port}", wait_subscriber_s=10)
    assert summary.triggers == 200
    got = [sub.recv() for _ in range(200)]
    assert got == expected(cfg)
    first = TriggerMessage.FromString(got[5])
    assert (first.event_counter, first.time.seconds) == (5, 1_700_000_000)
    assert nothing_more(sub)
    status = running.status()
    assert status["counters"]["received"] == 50 and status["counters"]["triggers"] == 200
    assert status["timing_board"]["last_message_age_s"] < 5
    assert status["counters"]["missed_bunches"] == 0


def test_malformed_bunches_are_counted_and_the_stream_goes_on(board, zmq_context) -> None:
    running, port, sub = board
    pub = zmq_context.socket(zmq.XPUB)
    pub.bind(f"tcp://127.0.0.1:{port}")
    assert pub.poll(10000), "the receiver did not subscribe"
    pub.recv()
    good = bunch(TimingSimConfig(triggers=2), 0)
    wire = good.SerializeToString()
    malformed = [
        b"\xff",  # a truncated varint tag
        wire[:-3],  # a bunch cut short
        b"\x1a\x05\x08\x01",  # a trigger whose length runs past the end
        b"\x0c",  # an end-group tag without its start
        b"\x1a\x03\x2a\x01\x08",  # a trigger whose timestamp is cut short
    ]
    for payload in malformed:
        pub.send(payload)
    pub.send(wire)
    later = TriggerBunch()
    later.CopyFrom(good)
    later.bunch_counter = 4  # bunches 1 to 3 never came
    pub.send(later.SerializeToString())
    got = [sub.recv() for _ in range(4)]
    assert got == [t.SerializeToString() for t in good.triggers] * 2
    counters = running.status()["counters"]
    assert counters["bad_message"] == len(malformed)
    assert counters["missed_bunches"] == 3
    assert counters["handler_errors"] == 0 and counters["triggers"] == 4
    pub.close(linger=0)
    err = running.stop()
    assert "bad_message: 1 since last report" in err and f"tcp://127.0.0.1:{port}" in err


def test_the_board_restarted_mid_run_is_reconnected_and_nothing_after_is_lost(board) -> None:
    running, port, sub = board
    assert running.status()["timing_board"]["connected"] is False
    first = run_board(port, 40)
    assert "published 40 TriggerBunch" in first.communicate(timeout=30)[0]
    assert len([sub.recv() for _ in range(120)]) == 120
    deadline = time.monotonic() + 10
    while running.status()["timing_board"]["connected"]:
        assert time.monotonic() < deadline, "the receiver did not notice the board going away"
        time.sleep(0.05)
    assert "waiting for" in running.status()["status_line"]

    second = run_board(port, 30)
    assert "published 30 TriggerBunch" in second.communicate(timeout=30)[0]
    got = [TriggerMessage.FromString(sub.recv()) for _ in range(90)]
    assert [m.event_counter for m in got] == list(range(90))
    assert nothing_more(sub)
    status = running.status()
    assert status["counters"]["connects"] == 2 and status["counters"]["disconnects"] >= 1
    assert status["counters"]["triggers"] == 210
    err = running.stop()
    assert "lost the timing board" in err and err.count("connected to the timing board") == 2


def test_a_peer_that_is_not_the_board_is_a_failed_attempt_not_a_connection(board) -> None:
    """Something accepting TCP on the board's port and closing again (seen behind proxies)."""
    running, port, _ = board
    with socket.create_server(("127.0.0.1", port)) as server:
        server.settimeout(5)
        for _ in range(5):
            server.accept()[0].close()
    status = running.status()
    assert status["timing_board"]["connected"] is False
    assert status["counters"]["connect_failures"] >= 5 and status["counters"]["connects"] == 0
    err = running.stop()
    assert "connected to the timing board" not in err and "lost the timing board" not in err
    assert err.count("connect_failures:") == 1, err  # rate-limited
    assert (
        f"connect_failures: 1 since last report (total 1); last: zmq handshake failed from "
        f"tcp://127.0.0.1:{port}"
        in err
        or "closed before the zmq handshake" in err
    )


def test_an_endpoint_zmq_cannot_use_is_a_config_error(tmp_path, runtime_dir) -> None:
    config = tmp_path / "timestamp.toml"
    config.write_text('[timing_board]\nendpoint = "tcp://no port here"\n')
    done = subprocess.run(
        receiver_argv(CLASSES["timestamp"], "--config", str(config)),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78, done.stderr
    assert f"{config}: timing_board.endpoint: 'tcp://no port here'" in done.stderr
