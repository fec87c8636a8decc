"""ssdaq-dash --once against a live receiver, a live writer and a MonitorData stream."""

import socket
import subprocess
import sys
import threading
import time

import pytest
import zmq

from ssdaq import daemons
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


def cells(out: str, name: str) -> dict[str, str]:
    """The cells of receiver ``name``'s row by column title (the table is wide enough here)."""
    [header] = [x for x in out.splitlines() if x.startswith("┃ receiver")]
    titles = [t.strip() for t in header.strip("┃").split("┃")]
    return dict(zip(titles, [c.strip() for c in row(out, name).strip("│").split("│")], strict=True))


def test_one_frame_shows_receivers_writers_and_monitor_only_senders(
        start_receiver, start_writer) -> None:
    pull, mon_pub = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    start_receiver("monitor", f'[monitor]\nenabled = false\n[pull]\nendpoint = "tcp://127.0.0.1:{pull}"\n'
                              f'[[publishers]]\nip = "127.0.0.1"\nport = {mon_pub}\n')
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    monitored = readout_config(port, pub_port).replace(
        "[monitor]\nenabled = false", f'[monitor]\nendpoint = "tcp://127.0.0.1:{pull}"\ninterval_s = 0.3')
    rx = start_receiver("readout", monitored)
    writer = start_writer("readout", {"readout": f"tcp://127.0.0.1:{pub_port}", "teldata": ""})
    sim = TMSimConfig(modules=32, rate=20, records_per_packet=5, duration=4.0)
    feeder = threading.Thread(target=simulate, args=(sim, "127.0.0.1", port))
    feeder.start()
    ctx = zmq.Context()
    remote = ctx.socket(zmq.PUSH)  # a receiver on another host, known only from its MonitorData
    remote.connect(f"tcp://127.0.0.1:{pull}")
    proc = dash_once(f"tcp://127.0.0.1:{mon_pub}", "--wait", "2.0")
    for _ in range(8):
        remote.send(messages.monitor_data("RemoteCamera", 4242, False, 0.0).SerializeToString())
        time.sleep(0.25)
    out, err = proc.communicate(timeout=30)
    feeder.join()
    remote.close(linger=0)
    ctx.term()
    assert proc.returncode == 0, err
    readout = row(out, "readout")
    assert "running" in readout and " ok " in readout and "ro/s" in readout
    assert rx.status()["monitor"]["sent"] > 0
    ro = cells(out, "readout")
    assert ro["monitor"].endswith(" s ago"), "MonitorData of the same pid goes with the receiver"
    assert float(ro["monitor"].split("/s")[0]) > 0 and ro["last data"].endswith(" s ago")
    assert cells(out, "trigger")["monitor"] == "-"
    assert writer.status()["counters"]["received"] > 0
    assert " ok " in row(out, "writer-readout") and "rows in" in row(out, "writer-readout")
    assert " ok " in row(out, "monitor")
    assert "not running" in row(out, "trigger")
    assert "monitor only" in row(out, "RemoteCamera") and "pid 4242" in row(out, "RemoteCamera")
    if not daemons.managed_by_systemd():
        assert "systemd does not manage ssdaq here" in out


def test_names_limit_the_frame_and_no_monitor_is_fine(runtime_dir) -> None:
    done = subprocess.run([sys.executable, "-m", "ssdaq.tools.dash", "--once", "--monitor", "",
                           "--wait", "0", "log", "teldata"], env=child_env(COLUMNS="200"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "not running" in row(done.stdout, "log") and "not running" in row(done.stdout, "teldata")
    assert "readout" not in done.stdout
