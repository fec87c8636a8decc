"""ReceiverServer lifecycle under real parts: systemd-socket-activate, a notify socket, signals.

Every test runs the receiver as its own process, the way systemd runs it.
"""

import signal
import socket
import subprocess
import time
from pathlib import Path

import zmq

from tests.conftest import child_env, free_port, receiver_argv, stop
from tests.sdnotify import NotifyListener

SAMPLES = "tests.core.sample_receivers"


def relay_config(tmp_path: Path, port: int, pub_port: int, extra: str = "") -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(f"""
[monitor]
enabled = false
[sockets.data]
ip = "127.0.0.1"
port = {port}
[[publishers]]
ip = "127.0.0.1"
port = {pub_port}
{extra}""")
    return path


def subscriber(ctx: zmq.Context, port: int) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(f"tcp://127.0.0.1:{port}")
    return sub


def activate(notify: NotifyListener, addrs: list[str], names: list[str], cmd: list[str],
             datagram: bool = True, watchdog_usec: int = 1_000_000, **env: str) -> subprocess.Popen:
    argv = ["systemd-socket-activate", *(["-d"] if datagram else []), "--fdname=" + ":".join(names)]
    for a in addrs:
        argv += ["-l", a]
    passed = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(watchdog_usec), **env}
    for key in ("PYTHONPATH", "RUNTIME_DIRECTORY", *passed):
        argv += ["-E", key]
    proc = subprocess.Popen(argv + cmd, env=child_env(**passed), stderr=subprocess.PIPE, text=True)
    for _ in addrs:  # it binds before it prints this; a datagram sent earlier would be lost
        assert "Listening on" in proc.stderr.readline()
    return proc


def send_udp(port: int, payload: bytes, host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, (host, port))


def test_socket_activated_relay_notifies_ready_status_watchdog_reload_and_stop(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    # the config names another port: systemd's socket must win, with a warning
    cfg = relay_config(tmp_path, port + 1 if port < 65535 else port - 1, pub_port)
    proc = activate(notify, [f"127.0.0.1:{port}"], ["data"],
                    receiver_argv("relay", "--config", str(cfg)))
    ctx = zmq.Context()
    try:
        sub = subscriber(ctx, pub_port)
        send_udp(port, b"first")  # makes systemd-socket-activate exec the receiver
        ready = notify.wait_for("READY", "1")
        assert notify.log[-1][1] == proc.pid, "READY=1 must come from the receiver's own PID"
        assert "STATUS" in ready
        time.sleep(0.3)  # the subscriber's connection settles
        send_udp(port, b"second")
        got = {sub.recv(), sub.recv()}
        assert got == {b"first", b"second"}, "the datagram that activated the service is relayed too"

        t0 = time.monotonic()
        statuses, pings = [], []
        while time.monotonic() - t0 < 2.6:
            _, fields = notify.recv(3)
            if "STATUS" in fields:
                statuses.append(fields["STATUS"])
            if fields.get("WATCHDOG") == "1":
                pings.append(time.monotonic())
        assert len(statuses) >= 2, statuses
        assert "in/s" in statuses[-1] and "lost 0" in statuses[-1]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert len(pings) >= 4 and all(0.3 < g < 0.8 for g in gaps), f"watchdog every 0.5 s: {gaps}"

        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.wait_for("READY", "1")

        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1")
        assert proc.wait(10) == 0
    finally:
        stop(proc)
        ctx.destroy(linger=0)
    err = proc.err
    assert "systemd passed port" in err and "using systemd's" in err


def test_socket_activated_stream_receiver(tmp_path: Path, runtime_dir: Path,
                                          notify: NotifyListener) -> None:
    port, pub_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    cfg = relay_config(tmp_path, port, pub_port)
    proc = activate(notify, [f"127.0.0.1:{port}"], ["data"],
                    receiver_argv(f"{SAMPLES}:StreamLines", "--config", str(cfg)), datagram=False)
    ctx = zmq.Context()
    try:
        sub = subscriber(ctx, pub_port)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            notify.wait_for("READY", "1")
            time.sleep(0.3)
            conn.sendall(b"one\ntw")
            conn.sendall(b"o\n")
            assert [sub.recv(), sub.recv()] == [b"one", b"two"]
        assert stop(proc) == 0
    finally:
        stop(proc)
        ctx.destroy(linger=0)


def test_a_stream_socket_where_a_datagram_one_is_expected_is_a_clear_error(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    port = free_port(socket.SOCK_STREAM)
    cfg = relay_config(tmp_path, port, free_port(socket.SOCK_STREAM))
    proc = activate(notify, [f"127.0.0.1:{port}"], ["data"],
                    receiver_argv("relay", "--config", str(cfg)), datagram=False)
    with socket.create_connection(("127.0.0.1", port)):
        proc.wait(10)
        assert stop(proc) == 69
    err = proc.err
    assert "socket 'data' from systemd is stream (TCP), expected datagram (UDP)" in err


def test_unused_sockets_from_systemd_are_closed_and_logged(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    port, spare = free_port(), free_port()
    cfg = relay_config(tmp_path, port, free_port(socket.SOCK_STREAM))
    proc = activate(notify, [f"127.0.0.1:{port}", f"127.0.0.1:{spare}"], ["data", "spare"],
                    receiver_argv("relay", "--config", str(cfg)))
    try:
        send_udp(port, b"x")
        notify.wait_for("READY", "1")
        assert stop(proc) == 0
    finally:
        stop(proc)
    assert f"closing unused socket 'spare' from systemd (127.0.0.1:{spare})" in proc.err


def test_bind_fallback_when_started_by_hand(tmp_path: Path, runtime_dir: Path,
                                            notify: NotifyListener) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    cfg = relay_config(tmp_path, port, pub_port)
    proc = subprocess.Popen(receiver_argv("relay", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    try:
        notify.wait_for("READY", "1")
        sub = subscriber(ctx, pub_port)
        time.sleep(0.3)
        send_udp(port, b"by hand")
        assert sub.recv() == b"by hand"
        assert stop(proc) == 0
    finally:
        stop(proc)
        ctx.destroy(linger=0)


def test_a_failing_ct_task_ends_the_process_with_a_traceback_and_non_zero_status(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    port = free_port()
    cfg = relay_config(tmp_path, port, free_port(socket.SOCK_STREAM))
    proc = subprocess.Popen(receiver_argv(f"{SAMPLES}:Worker", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY", "1")
        send_udp(port, b"die")
        proc.wait(10)
        assert stop(proc) == 70
    finally:
        stop(proc)
    err = proc.err
    assert "task ct_orders failed" in err and "RuntimeError: told to die" in err


def test_watchdog_is_withheld_when_the_data_path_hangs_but_not_when_idle(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    port = free_port()
    cfg = relay_config(tmp_path, port, free_port(socket.SOCK_STREAM))
    env = child_env(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000", SSDAQ_TEST_HANG_AFTER_S="2")
    proc = subprocess.Popen(receiver_argv("relay", "--config", str(cfg)), env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY", "1")
        # idle for 2 s: the watchdog keeps being fed (no data is not a fault)
        t_ready = time.monotonic()
        pings = []
        while time.monotonic() - t_ready < 1.8:
            _, fields = notify.recv(2)
            if fields.get("WATCHDOG") == "1":
                pings.append(time.monotonic())
        assert len(pings) >= 2
        # after the hook fires, data waits unread in the socket: the pings must stop
        deadline = time.monotonic() + 6
        last_ping = pings[-1]
        while time.monotonic() < deadline:
            send_udp(port, b"data")
            try:
                _, fields = notify.recv(0.2)
            except TimeoutError:
                continue
            if fields.get("WATCHDOG") == "1":
                last_ping = time.monotonic()
        assert deadline - last_ping > 3.0, "watchdog pings continued although the data path hung"
    finally:
        stop(proc)
    assert "withholding the watchdog ping: socket" in proc.err


def test_a_rejected_reload_keeps_the_old_config_and_says_why(tmp_path: Path, runtime_dir: Path,
                                                             notify: NotifyListener) -> None:
    port = free_port()
    cfg = relay_config(tmp_path, port, free_port(socket.SOCK_STREAM))
    good = cfg.read_text()
    proc = subprocess.Popen(receiver_argv("relay", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY", "1")
        cfg.write_text("max_datagram_bytes = 0\n" + good)
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", "1")
        ready = notify.wait_for("READY", "1")
        assert "reload rejected, old config kept" in ready["STATUS"]
        assert "max_datagram_bytes: expected integer in [1, 65535], got 0" in ready["STATUS"]
        assert proc.poll() is None
        send_udp(port, b"still relaying")
        cfg.write_text(good.replace("[monitor]", "[log]\nlevel = \"debug\"\n[monitor]"))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", "1")
        assert "reload rejected" not in notify.wait_for("READY", "1")["STATUS"]
        assert stop(proc) == 0
    finally:
        stop(proc)
    assert "configuration reloaded from" in proc.err
