"""MonitorReceiver as a process: MonitorData republished verbatim, the newest per receiver kept."""

import socket
import subprocess
import time

import pytest
import zmq

from ssdaq.data.messages import MonitorData, monitor_data
from tests.conftest import child_env, free_port, receiver_argv
from tests.receivers.conftest import CLASSES, QUIET, nothing_more, publisher_config, subscribe


def monitor_config(pull_port: int, pub_port: int, top: str = "") -> str:
    return (
        top
        + QUIET
        + publisher_config(pub_port)
        + (f'[pull]\nendpoint = "tcp://127.0.0.1:{pull_port}"\n')
    )


@pytest.fixture
def monitor(start_receiver, zmq_context):
    """(receiver, a PUSH socket to it, a subscriber to what it publishes, its PULL port)."""
    pull_port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    running = start_receiver(
        "monitor", monitor_config(pull_port, pub_port, "stale_after_s = 0.5\nmax_receivers = 3\n")
    )
    push = zmq_context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{pull_port}")
    yield running, push, subscribe(zmq_context, pub_port), pull_port
    push.close(linger=0)


def table(running) -> dict[str, dict]:
    return {row["name"]: row for row in running.command("receivers")}


def test_monitor_data_is_republished_byte_for_byte_and_the_newest_is_tabled(monitor) -> None:
    running, push, sub, _ = monitor
    sent = [
        monitor_data(
            "TriggerPacketReceiver", 1234, k % 2 == 0, 10.0 * k, 1_700_000_000 * 10**9 + k
        ).SerializeToString()
        for k in range(5)
    ]
    for payload in sent:
        push.send(payload)
    assert [sub.recv() for _ in sent] == sent
    row = table(running)["TriggerPacketReceiver"]
    assert (row["pid"], row["rate"], row["receiving"], row["messages"]) == (1234, 40.0, True, 5)
    assert row["age_s"] < 0.5 and not row["stale"] and row["last_seen"].endswith("+00:00")
    time.sleep(0.7)
    assert table(running)["TriggerPacketReceiver"]["stale"] is True
    in_status = running.status()["receivers"]
    assert [(r["name"], r["last_seen"], r["stale"]) for r in in_status] == [
        ("TriggerPacketReceiver", row["last_seen"], True)
    ]
    assert "1 receivers (1 stale)" in running.status()["status_line"]


def test_malformed_messages_are_counted_and_not_republished(monitor) -> None:
    running, push, sub, _ = monitor
    no_time = MonitorData()
    no_time.reciver.name = "x"
    for payload in (b"\xff\xff", no_time.SerializePartialToString(), b"\x0a\x04\x08\x01"):
        push.send(payload)
    good = monitor_data("LogReceiver", 7, False, 0.0).SerializeToString()
    push.send(good)
    assert sub.recv() == good
    assert nothing_more(sub)
    assert running.counter("bad_message") == 3
    assert list(table(running)) == ["LogReceiver"]


def test_the_receiver_heard_from_longest_ago_is_forgotten_beyond_max_receivers(monitor) -> None:
    running, push, sub, _ = monitor
    for name in ("a", "b", "c", "a", "d", "e"):
        push.send(monitor_data(name, 1, True, 1.0).SerializeToString())
    for _ in range(6):
        sub.recv()
    assert sorted(table(running)) == ["a", "d", "e"]
    assert running.counter("forgotten") == 2


def test_receivers_report_to_it_with_their_own_monitor_sender(monitor, start_receiver) -> None:
    running, _, sub, pull_port = monitor
    udp = free_port()
    trigger = start_receiver(
        "trigger",
        (
            f'[monitor]\nendpoint = "tcp://127.0.0.1:{pull_port}"\ninterval_s = 0.2\n'
            + publisher_config(free_port(socket.SOCK_STREAM))
            + f'[sockets.data]\nip = "127.0.0.1"\nport = {udp}\n'
        ),
    )
    deadline = time.monotonic() + 10
    while "TriggerPacketReceiver" not in table(running):
        assert time.monotonic() < deadline, table(running)
        time.sleep(0.1)
    row = table(running)["TriggerPacketReceiver"]
    assert row["pid"] == trigger.proc.pid and not row["stale"]
    got = MonitorData.FromString(sub.recv())
    assert got.reciver.name == "TriggerPacketReceiver"


def test_an_endpoint_that_cannot_be_bound_is_exit_69_naming_it(tmp_path, runtime_dir) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "monitor.toml"
        config.write_text(monitor_config(port, free_port(socket.SOCK_STREAM)))
        done = subprocess.run(
            receiver_argv(CLASSES["monitor"], "--config", str(config)),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 69, done.stderr
    assert f"cannot bind the MonitorData endpoint tcp://127.0.0.1:{port}" in done.stderr
