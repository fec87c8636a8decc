"""ssdaq-dash --once against a live receiver, a live writer and a MonitorData stream."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ssdaq.data import messages
from ssdaq.simulators.tm import TMSimConfig, simulate
from tests.conftest import child_env, free_port
from tests.tools.test_ctl import readout_config

pytest.importorskip("rich", reason="rich (the tools extra) is not installed")


def dash_once(monitor: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ssdaq.tools.dash", "--once", "--monitor",
                             monitor, *args], env=child_env(COLUMNS="220"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def row(out: str, name: str) -> str:
    [line] = [x for x in out.splitlines() if x.strip("│┃ ").startswith(name + " ")]
    return line


def test_one_frame_shows_receivers_writers_and_monitor_only_senders(
        start_receiver, start_writer, publisher) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", readout_config(port, pub_port))
    writer = start_writer("readout", {"readout": f"tcp://127.0.0.1:{pub_port}", "teldata": ""})
    sim = TMSimConfig(modules=32, rate=20, records_per_packet=5, duration=2.5)
    feeder = threading.Thread(target=simulate, args=(sim, "127.0.0.1", port))
    feeder.start()
    monitor = publisher()  # stands in for the MonitorReceiver's PUB
    proc = dash_once(monitor.endpoint, "--wait", "2.0")
    monitor.wait_subscriber()
    pid = rx.status()["pid"]
    for _ in range(3):
        monitor.send(messages.monitor_data("ReadoutAssembler", pid, True, 64.0).SerializeToString())
        monitor.send(messages.monitor_data("RemoteCamera", 4242, False, 0.0).SerializeToString())
        time.sleep(0.3)
    out, err = proc.communicate(timeout=30)
    feeder.join()
    assert proc.returncode == 0, err
    readout = row(out, "readout")
    assert "running" in readout and " ok " in readout and "ro/s" in readout
    assert "64.0/s, " in readout, "the MonitorData of the same pid goes with the receiver"
    assert " s ago" in readout
    assert writer.status()["counters"]["received"] > 0
    assert " ok " in row(out, "writer-readout") and "rows in" in row(out, "writer-readout")
    assert "not running" in row(out, "trigger")
    assert "monitor only" in row(out, "RemoteCamera") and "pid 4242" in row(out, "RemoteCamera")
    if not os.path.isdir("/run/systemd/system"):
        assert "systemd is not running here" in out


def test_names_limit_the_frame_and_no_monitor_is_fine(runtime_dir) -> None:
    done = subprocess.run([sys.executable, "-m", "ssdaq.tools.dash", "--once", "--monitor", "",
                           "--wait", "0", "log", "teldata"], env=child_env(COLUMNS="200"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "not running" in row(done.stdout, "log") and "not running" in row(done.stdout, "teldata")
    assert "readout" not in done.stdout
