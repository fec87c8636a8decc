"""``ssdaq-sim replay``: record -> replay into a fresh receiver -> record again gives the same readouts."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ssdaq import daemons
from ssdaq.io import reader
from ssdaq.simulators.replay import replay_order
from tests.conftest import child_env, free_port
from tests.tools.test_ctl import readout_config

pytestmark = pytest.mark.skipif(daemons.managed_by_systemd(),
                                reason="ssdaq's units are installed under this host's systemd: "
                                       "ssdaqctl would act on them")


def sim(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "ssdaq.simulators.cli", *args, "--json"],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def record(start_receiver, start_writer, directory: Path, feed) -> np.ndarray:
    """Rows a fresh receiver + writer recorded of what ``feed(port)`` sent (it returns the
    simulator's summary), in TACK order."""
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", readout_config(port, pub_port).replace(
        "[assembler]\n", "[assembler]\nmax_wait_s = 0.2\n"))
    w = start_writer("readout", {"readout": f"tcp://127.0.0.1:{pub_port}", "teldata": ""},
                     directory=directory, flush_interval_s=0.1)
    time.sleep(0.3)  # the writer's subscription reaches the receiver's PUB
    readouts = feed(port)["readouts"]
    rx.wait(lambda s: s["counters"]["published"] == readouts)
    w.wait(lambda s: s["counters"]["written"] == readouts)
    w.stop()
    rx.stop()
    rows = np.concatenate([reader.read_table(p) for p in reader.data_files(directory)])
    return rows[np.argsort(rows["time"], kind="stable")]


def test_record_replay_record_gives_the_same_readouts_partial_ones_included(
        start_receiver, start_writer, tmp_path: Path) -> None:
    first = record(start_receiver, start_writer, tmp_path / "first", lambda port: sim(
        "tm", "--port", str(port), "--rate", "50", "--duration", "1", "--loss", "0.02",
        "--seed", "3", "--modules", "30"))
    partial = np.isnan(first["data"]).all(axis=2).sum(axis=1)
    assert (partial > 2).any(), "some readouts lost a module (beyond the two never sent)"
    [path] = reader.data_files(tmp_path / "first")
    replayed: dict = {}

    def replay(port: int) -> dict:
        replayed.update(sim("replay", str(path), "--port", str(port), "--speed", "5"))
        return replayed

    second = record(start_receiver, start_writer, tmp_path / "second", replay)
    assert replayed["readouts"] == replayed["partial_readouts"] == len(first)
    assert len(second) == len(first)
    assert second["time"].tolist() == first["time"].tolist()
    np.testing.assert_array_equal(second["data"], first["data"])  # NaN (absent) compares equal
    assert replayed["elapsed_s"] < 0.5, "five times faster than the 1 s recorded"


def test_replay_order_keeps_segments_between_tack_resets_each_in_tack_order() -> None:
    tack = np.array([100, 300, 200, 400, 50 * 10**9, 51 * 10**9, 1_000, 900, 3_000], np.uint64)
    assert replay_order(tack).tolist() == [0, 2, 1, 3, 4, 5, 7, 6, 8]


def test_a_file_without_readouts_is_refused_with_65(tmp_path: Path) -> None:
    bad = tmp_path / "x.hdf5"
    bad.write_bytes(b"not hdf5")
    done = subprocess.run([sys.executable, "-m", "ssdaq.simulators.cli", "replay", str(bad)],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 65 and "cannot read readouts" in done.stderr
