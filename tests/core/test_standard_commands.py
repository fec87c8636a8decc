"""The built-in commands of a running receiver: config is what --print-config shows; status
carries what this process costs."""

import socket
import subprocess
import time
from pathlib import Path

from ssdaq.core.commands import request
from tests.conftest import child_env, free_port, receiver_argv, stop
from tests.core.test_receiver_server import SAMPLES, relay_config
from tests.sdnotify import NotifyListener


def test_config_is_the_effective_configuration_and_status_has_the_process_costs(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener) -> None:
    cfg = relay_config(tmp_path, free_port(), free_port(socket.SOCK_STREAM), "[log]\nlevel = \"debug\"\n")
    argv = receiver_argv(f"{SAMPLES}:Worker", "--config", str(cfg))
    printed = subprocess.run([*argv, "--print-config"], env=child_env(), capture_output=True,
                             text=True, timeout=30, check=True).stdout
    before = time.time()
    proc = subprocess.Popen(argv, env=child_env(NOTIFY_SOCKET=notify.path), stderr=subprocess.PIPE,
                            text=True)
    try:
        notify.wait_for("READY", "1")
        path = str(runtime_dir / "worker.ctl")
        assert request(path, "config")["result"] == printed
        assert "config" in request(path, "help")["result"]
        process = request(path, "status")["result"]["process"]
        assert 0 < process["cpu_s"] < 30
        assert 10 * 2**20 < process["rss_bytes"] < 2**30
        assert before - 1 < process["started_unix"] < time.time()
        assert stop(proc) == 0
    finally:
        stop(proc)
