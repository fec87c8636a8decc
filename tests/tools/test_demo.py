"""make demo: the whole DAQ on loopback for a few seconds, files written, everything stopped."""

import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from ssdaq.io import reader
from ssdaq.io.layouts import TIMESTAMP_PATH, TRIGGER_PATH
from tests.conftest import ROOT, child_env


def test_demo_runs_every_receiver_and_leaves_complete_files(tmp_path: Path) -> None:
    ip = f"127.0.0.{random.randrange(150, 250)}"  # away from other tests' addresses and ports
    offset = random.randrange(1000, 15000)
    out = tmp_path / "demo-output"
    done = subprocess.run([sys.executable, "-m", "ssdaq.tools.demo", "--duration", "5",
                           "--no-dash", "--output", str(out), "--ip", ip, "--port-offset",
                           str(offset)], env=child_env(), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"started 6 receivers and 3 writers on {ip}")
    assert done.stdout.rstrip().endswith("demo ok")
    for name in ("readout", "trigger", "timestamp", "log", "monitor", "teldata", "writer-readout",
                 "writer-trigger", "writer-timestamp"):
        assert f"  {name} " in done.stdout.split("receivers (final status):")[1]
    [ro] = reader.data_files(out, "readout")
    assert ro.name.startswith("readout_obs000001_") and ro.name.endswith("_000.hdf5")
    assert f"ssdaq-info {ro}\n" in done.stdout, "one observation, described"
    rows = reader.read_table(ro)
    assert rows["iro"].tolist() == list(range(1, 51)), "5 s at 10 readouts/s, none lost"
    assert not np.isnan(rows["data"]).any(), "all 32 modules in every readout"
    tel = reader.read_table(ro, "/SlowSignal/tel_table")
    assert len(tel) >= 3 and np.allclose(tel["ra"], 83.633, atol=1e-4)
    [tr] = reader.data_files(out, "trigger")
    assert len(reader.read_table(tr, TRIGGER_PATH)) == 50
    [ts] = reader.data_files(out, "timestamp")
    assert len(reader.read_table(ts, TIMESTAMP_PATH)) == 500
    [png] = out.glob("camera_*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.part"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 17000 + offset))  # the readout port is free again: nothing was left running
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, a listener not
        s.bind((ip, 9004 + offset))
        s.listen()
