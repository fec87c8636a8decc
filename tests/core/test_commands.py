"""The command channel and ssdaqctl against a running receiver (real process, real IPC socket)."""

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ssdaq.core.commands import request
from tests.conftest import child_env, ctl_argv, free_port, receiver_argv, stop
from tests.core.test_receiver_server import relay_config, send_udp
from tests.sdnotify import NotifyListener


@pytest.fixture
def worker(tmp_path: Path, runtime_dir: Path, notify: NotifyListener):
    port = free_port()
    cfg = relay_config(tmp_path, port, free_port(socket.SOCK_STREAM))
    proc = subprocess.Popen(receiver_argv("tests.core.sample_receivers:Worker", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    notify.wait_for("READY", "1")
    yield proc, port
    stop(proc)


def ctl(*args: str) -> tuple[int, dict | None, str]:
    done = subprocess.run(ctl_argv(*args), env=child_env(), capture_output=True, text=True, timeout=20)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def test_ping_help_and_status_round_trip(worker, runtime_dir: Path) -> None:
    proc, port = worker
    code, reply, _ = ctl("worker", "ping")
    assert (code, reply) == (0, {"ok": True, "result": "pong"})
    code, reply, _ = ctl("worker", "help")
    assert code == 0 and reply["result"]["sleep"] == "Sleep, then answer (a slow command)."
    assert set(reply["result"]) >= {"ping", "help", "status", "reload", "sleep"}
    send_udp(port, b"x")
    time.sleep(0.8)  # the reader starts after start_hold_s
    send_udp(port, b"y")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        code, reply, _ = ctl("worker", "status")
        if reply["result"]["counters"]["received"] == 2:
            break
        time.sleep(0.1)
    status = reply["result"]
    assert status["name"] == "worker" and status["class"] == "Worker" and status["pid"] == proc.pid
    assert status["counters"]["received"] == 2 and status["counters"]["published"] == 2
    assert status["health"] == "ok"
    time.sleep(1.1)  # the next status tick notes when input last arrived
    assert 0 <= request(str(runtime_dir / "worker.ctl"), "status")["result"]["last_input_s_ago"] < 3


def test_unknown_command_and_bad_arguments_are_refused_not_fatal(worker) -> None:
    code, reply, _ = ctl("worker", "frobnicate")
    assert code == 1 and reply["ok"] is False and "unknown command 'frobnicate'" in reply["error"]
    code, reply, _ = ctl("worker", "sleep")
    assert code == 1 and reply["error"] == "usage: sleep <seconds>"
    code, reply, _ = ctl("worker", "sleep", "soon")
    assert code == 1 and "expected seconds, got 'soon'" in reply["error"]
    code, reply, _ = ctl("worker", "ping")
    assert code == 0, "the receiver must still answer after refusals"


def test_a_slow_command_does_not_stall_others_or_the_data_path(worker, runtime_dir: Path) -> None:
    proc, port = worker
    path = str(runtime_dir / "worker.ctl")
    slow = subprocess.Popen(ctl_argv("worker", "sleep", "2", "--timeout", "5"), env=child_env(),
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert request(path, "ping")["result"] == "pong"
    assert time.monotonic() - t0 < 0.5
    for _ in range(5):
        send_udp(port, b"during")
    time.sleep(0.3)
    assert request(path, "status")["result"]["counters"]["received"] == 5
    out, _ = slow.communicate(timeout=10)
    assert slow.returncode == 0 and json.loads(out)["result"] == "slept 2 s"


def test_command_socket_is_group_only(worker, runtime_dir: Path) -> None:
    mode = stat.S_IMODE(os.stat(runtime_dir / "worker.ctl").st_mode)
    assert mode == 0o660


def test_reload_without_config_file_changes_nothing(worker) -> None:
    code, reply, _ = ctl("worker", "reload")
    assert code == 0 and reply["result"] == "reloaded"


def test_ssdaqctl_without_receiver_says_which_socket_it_tried(runtime_dir: Path) -> None:
    code, reply, err = ctl("nobody", "ping")
    assert code == 2 and reply is None
    assert f"no command socket at {runtime_dir}/nobody.ctl" in err


def test_ssdaqctl_times_out_naming_the_socket(tmp_path: Path) -> None:
    # a socket file that nobody serves: the request must time out, not hang
    path = tmp_path / "mute.ctl"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        t0 = time.monotonic()
        code, _, err = ctl("mute", "ping", "--socket", str(path), "--timeout", "0.5")
    assert code == 2 and f"no answer from {path} within 0.5 s" in err
    assert time.monotonic() - t0 < 5


def test_ssdaqctl_usage_error_exits_64() -> None:
    code, _, err = ctl("worker", "ping", "--timeout", "soon")
    assert code == 64 and "invalid float value" in err
    code, _, _ = ctl("worker")
    assert code == 64
