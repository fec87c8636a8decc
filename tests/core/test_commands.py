"""The command channel and ssdaqctl against a running receiver (real process, real IPC socket)."""

import concurrent.futures
import grp
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from ssdaq.core.commands import (
    SYSTEM_RUNTIME_DIR,
    Connections,
    NoAnswer,
    dispatch,
    make_runtime_directory,
    request,
    runtime_directory,
)
from ssdaq.core.errors import CommandError
from tests.conftest import child_env, ctl_argv, free_port, receiver_argv, stop
from tests.core.test_receiver_server import SAMPLES, relay_config, send_udp
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


def test_empty_and_undecodable_requests_get_an_error_reply(worker, runtime_dir: Path) -> None:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(f"ipc://{runtime_dir / 'worker.ctl'}")
    try:
        for body, error in ((b"", "empty request"), (b"\xff\xfe status", "unknown command")):
            sock.send(body)
            assert sock.poll(5000), "no reply"
            reply = json.loads(sock.recv())
            assert reply["ok"] is False and error in reply["error"], reply
        sock.send(b"ping")
        assert sock.poll(5000) and json.loads(sock.recv()) == {"ok": True, "result": "pong"}
    finally:
        sock.close(linger=0)


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


def test_requests_that_arrive_together_are_all_answered(worker, runtime_dir: Path) -> None:
    """512 clients at once, each on its own connection, while a slow command runs: every one is
    answered (the socket is read when zmq's descriptor wakes the loop, which signals edges, so
    the server takes every queued request before it sleeps and looks again after each reply)."""
    path = str(runtime_dir / "worker.ctl")
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        slow = pool.submit(request, path, "sleep 0.5", 5.0)
        answers = list(pool.map(lambda i: request(path, "ping" if i % 2 else "status", 5.0),
                                range(64 * 8)))
        assert slow.result()["result"] == "slept 0.5 s"
    assert [a["ok"] for a in answers] == [True] * 64 * 8
    assert sum(a["result"] == "pong" for a in answers) == 32 * 8


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


def test_the_runtime_directory_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = str(tmp_path / "run-ssdaq")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/a:/run/b")
    assert runtime_directory(system) == "/run/a", "systemd's RuntimeDirectory= first"
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    assert runtime_directory(system) == str(tmp_path / "user" / "ssdaq"), "no system dir: the user's"
    os.mkdir(system)
    assert runtime_directory(system) == system, "the installed package's directory wins"
    os.rmdir(system)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_directory(system) == system, "nothing else: the system dir, made if we may"


@pytest.mark.skipif(os.geteuid() != 0, reason="making the system directory needs root")
def test_root_makes_the_system_directory_group_ssdaq_setgid(tmp_path: Path) -> None:
    system = str(tmp_path / "run-ssdaq")
    make_runtime_directory(system, system)
    st = os.stat(system)
    assert stat.S_IMODE(st.st_mode) == 0o2750
    try:
        assert st.st_gid == grp.getgrnam("ssdaq").gr_gid
    except KeyError:
        assert st.st_gid == 0, "without a group ssdaq, root's"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_a_user_without_a_runtime_directory_is_told_what_to_do(tmp_path: Path) -> None:
    code = ("from ssdaq.core.commands import make_runtime_directory as m\n"
            f"m({str(tmp_path / 'absent')!r}, {str(tmp_path / 'absent')!r})")
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), user="nobody",
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "only root may create it" in done.stderr and "XDG_RUNTIME_DIR" in done.stderr


@pytest.mark.skipif(os.path.isdir(SYSTEM_RUNTIME_DIR), reason=f"{SYSTEM_RUNTIME_DIR} exists here: the rule picks it")
def test_started_by_hand_in_a_login_session_it_is_reachable_with_ssdaqctl(
        tmp_path: Path, short_dir: Path, notify: NotifyListener) -> None:
    xdg = short_dir / "user"
    xdg.mkdir(mode=0o700)
    env = {k: v for k, v in child_env(XDG_RUNTIME_DIR=str(xdg)).items() if k != "RUNTIME_DIRECTORY"}
    cfg = relay_config(tmp_path, free_port(), free_port(socket.SOCK_STREAM))
    proc = subprocess.Popen(receiver_argv(f"{SAMPLES}:Worker", "--config", str(cfg)),
                            env={**env, "NOTIFY_SOCKET": notify.path}, stderr=subprocess.PIPE, text=True)
    try:
        notify.wait_for("READY", "1")
        assert stat.S_IMODE(os.stat(xdg / "ssdaq").st_mode) == 0o700
        done = subprocess.run(ctl_argv("worker", "ping"), env=env, capture_output=True, text=True,
                              timeout=20)
        assert done.returncode == 0 and json.loads(done.stdout)["result"] == "pong", done.stderr
        assert stop(proc) == 0
    finally:
        stop(proc)
    assert not (xdg / "ssdaq" / "worker.ctl").exists(), "the socket is removed at stop"


def test_a_command_socket_that_cannot_be_bound_exits_69_and_never_says_exit_0(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    cfg = relay_config(tmp_path, free_port(), free_port(socket.SOCK_STREAM),
                       f'[control]\nsocket = "{tmp_path}/absent/worker.ctl"\n')
    proc = subprocess.Popen(receiver_argv(f"{SAMPLES}:Worker", "--config", str(cfg)),
                            env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE, text=True)
    proc.wait(20)
    assert stop(proc) == 69
    assert f"cannot bind command socket {tmp_path}/absent/worker.ctl" in proc.err
    assert "exit 0" not in proc.err, proc.err


def test_a_kept_connection_is_answered_again_after_the_receiver_restarts(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    """What the metrics service sees across ``systemctl restart``: the kept connection is
    answered by the new process, and one to a receiver that stopped for good is closed."""
    cfg = relay_config(tmp_path, free_port(), free_port(socket.SOCK_STREAM))
    path = str(runtime_dir / "worker.ctl")
    argv = receiver_argv("tests.core.sample_receivers:Worker", "--config", str(cfg))
    connections = Connections()
    try:
        pids = []
        for _ in range(2):
            proc = subprocess.Popen(argv, env=child_env(NOTIFY_SOCKET=notify.path),
                                    stderr=subprocess.PIPE, text=True)
            notify.wait_for("READY", "1")
            pids += [connections.request(path, "status", 5.0)["result"]["pid"] for _ in range(2)]
            assert len(connections) == 1
            stop(proc)
        assert pids[0] == pids[1] != pids[2] == pids[3]
        with pytest.raises(NoAnswer, match="no command socket"):
            connections.request(path, "status")
        connections.prune()
        assert len(connections) == 0
    finally:
        connections.close()


def _commands() -> dict:
    def none() -> str:
        return "none"

    def one(a: str) -> str:
        return a

    def optional(a: str, b: str = "b") -> str:
        return a + b

    def many(a: str, *rest: str) -> str:
        return a + "".join(rest)

    def keyword(a: str, *, flag: str) -> str:
        return a + flag

    return {"none": none, "one": one, "optional": optional, "many": many, "keyword": keyword}


@pytest.mark.parametrize("command, words, result", [
    ("none", [], "none"), ("one", ["x"], "x"), ("optional", ["x"], "xb"),
    ("optional", ["x", "y"], "xy"), ("many", ["x"], "x"), ("many", ["x", "y", "z"], "xyz")])
def test_dispatch_calls_with_every_word_count_the_command_takes(command, words, result) -> None:
    assert dispatch(_commands(), command, words) == result


@pytest.mark.parametrize("command, words, usage", [
    ("none", ["x"], "usage: none"), ("one", [], "usage: one <a>"),
    ("one", ["x", "y"], "usage: one <a>"), ("optional", ["x", "y", "z"], "usage: optional <a> <b>"),
    ("many", [], "usage: many <a> <rest>"), ("keyword", ["x"], "usage: keyword <a> <flag>")])
def test_dispatch_refuses_a_wrong_word_count_with_the_usage(command, words, usage) -> None:
    with pytest.raises(CommandError) as refused:
        dispatch(_commands(), command, words)
    assert str(refused.value) == usage
