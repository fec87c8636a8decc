"""MonitorData from a running receiver: what old dashboards read, and an absent MonitorReceiver."""

import signal
import socket
import subprocess
import time
from pathlib import Path

import zmq

from ssdaq.core.commands import request
from ssdaq.data.messages import MonitorData
from tests.conftest import child_env, free_port, receiver_argv, stop
from tests.sdnotify import NotifyListener

TCP = socket.SOCK_STREAM


def relay(tmp_path: Path, port: int, mon_port: int) -> Path:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'start_hold_s = 0.0\n[monitor]\nendpoint = "tcp://127.0.0.1:{mon_port}"\n'
                   f'interval_s = 0.2\n[sockets.data]\nip = "127.0.0.1"\nport = {port}\n'
                   f'[[publishers]]\nip = "127.0.0.1"\nport = {free_port(TCP)}\n')
    return cfg


def test_monitor_data_carries_class_name_pid_and_input_rate(tmp_path: Path, runtime_dir: Path,
                                                            notify: NotifyListener) -> None:
    port, mon_port = free_port(), free_port(TCP)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{mon_port}")
    proc = subprocess.Popen(receiver_argv("relay", "--config", str(relay(tmp_path, port, mon_port))),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY", "1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                s.sendto(b"x", ("127.0.0.1", port))
                time.sleep(0.002)
        pull.setsockopt(zmq.RCVTIMEO, 3000)
        msgs = [MonitorData.FromString(pull.recv()) for _ in range(5)]
        assert {m.reciver.name for m in msgs} == {"UDPRelay"}
        assert {m.reciver.pid for m in msgs} == {proc.pid}
        assert any(m.reciver.recv_data and m.reciver.data_rate > 50 for m in msgs)
        assert all(abs(m.time.sec - time.time()) < 5 for m in msgs), "UTC seconds"
    finally:
        stop(proc)
        pull.close()
        ctx.destroy(linger=0)


def test_an_absent_monitor_receiver_costs_a_counter_and_reload_moves_the_endpoint(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    port, mon_port = free_port(), free_port(TCP)
    cfg = relay(tmp_path, port, mon_port)
    proc = subprocess.Popen(receiver_argv("relay", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        notify.wait_for("READY", "1")
        time.sleep(1.0)
        mon = request(str(runtime_dir / "relay.ctl"), "status")["result"]["monitor"]
        assert mon["dropped"] >= 3 and mon["sent"] == 0
        new_port = free_port(TCP)
        pull.bind(f"tcp://127.0.0.1:{new_port}")
        cfg.write_text(cfg.read_text().replace(f":{mon_port}", f":{new_port}"))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", "1")
        pull.setsockopt(zmq.RCVTIMEO, 3000)
        assert MonitorData.FromString(pull.recv()).reciver.name == "UDPRelay"
    finally:
        stop(proc)
        pull.close()
        ctx.destroy(linger=0)
