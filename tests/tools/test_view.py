"""ssdaq-view: every module lands where the mapping puts it, in the colour of its amplitude."""

import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ssdaq.data.mapping import MODULE_GRID, MODULE_SIDE
from ssdaq.data.readout import N_TM, N_TM_PIX, SSReadout
from ssdaq.io.files import OpenFile
from ssdaq.io.layouts import LAYOUTS, readout_rows
from ssdaq.simulators.tm import TMSimConfig, simulate
from tests.conftest import child_env, free_port
from tests.tools.test_ctl import readout_config

pytest.importorskip("matplotlib", reason="matplotlib (the tools extra) is not installed")
from matplotlib import colormaps  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from ssdaq.tools import view  # noqa: E402


def pattern() -> SSReadout:
    """Slot 0 at the top of the scale, slot 1 at the bottom, slot 2 absent, the rest mid-scale."""
    data = np.full((N_TM, N_TM_PIX), 500.0)
    data[0], data[1], data[2] = 1000.0, 0.0, np.nan
    return SSReadout(timestamp=123, readout_number=7, cpu_t_s=1_700_000_000, data=data)


def colour_at_module(fig, png: np.ndarray, slot: int, corner: bool = False) -> np.ndarray:
    """The PNG's colour at the middle of a module's block (data coordinates -> PNG pixels)."""
    grid_row, grid_col = MODULE_GRID[slot]
    offset = 1.5 if corner else MODULE_SIDE / 2
    x = grid_col * MODULE_SIDE + offset
    y = grid_row * MODULE_SIDE + offset
    px, py = fig.axes[0].transData.transform((x, y))
    return png[png.shape[0] - int(round(py)), int(round(px)), :3]


def test_modules_are_drawn_where_the_mapping_puts_them(tmp_path: Path) -> None:
    fig = view.render(pattern(), vmin=0, vmax=1000)
    fig.savefig(tmp_path / "c.png")
    png = imread(tmp_path / "c.png")
    assert png.shape[:2] == (640, 750)
    cmap = colormaps["viridis"]
    np.testing.assert_allclose(colour_at_module(fig, png, 0), cmap(1.0)[:3], atol=0.02)
    np.testing.assert_allclose(colour_at_module(fig, png, 1), cmap(0.0)[:3], atol=0.02)
    np.testing.assert_allclose(colour_at_module(fig, png, 2), [0.8] * 3, atol=0.02)
    np.testing.assert_allclose(colour_at_module(fig, png, 17), cmap(0.5)[:3], atol=0.02)
    np.testing.assert_allclose(colour_at_module(fig, png, 17, corner=True), cmap(0.5)[:3],
                               atol=0.02)
    px, py = fig.axes[0].transData.transform((3.5, 3.5))  # the empty corner of the focal plane
    np.testing.assert_allclose(png[png.shape[0] - int(py), int(px), :3], [1, 1, 1], atol=0.02)
    assert fig.axes[0].get_title().startswith("readout 7   TACK 123")
    assert fig.axes[1].get_ylabel() == "amplitude (mV)"


def view_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssdaq.tools.view", *args], env=child_env(),
                          capture_output=True, text=True, timeout=60)


def test_renders_a_row_of_a_written_file(tmp_path: Path) -> None:
    f = OpenFile(tmp_path, "readout", LAYOUTS["readout"], 1)
    other = pattern()
    other.iro = 8
    f.append(readout_rows([pattern().pack(), other.pack()])[0])
    path = f.close()
    done = view_cli("--file", str(path), "--index", "0", "-o", str(tmp_path / "first.png"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'first.png'}: readout 7, 31/32 modules\n"
    assert (tmp_path / "first.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = view_cli("--file", str(path), "-o", str(tmp_path / "last.png"))
    assert "readout 8" in done.stdout
    assert view_cli("--file", str(path), "--index", "5").returncode == 1


def test_renders_the_latest_readout_of_the_live_assembler(start_receiver, tmp_path: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    start_receiver("readout", readout_config(port, pub_port))
    sim = TMSimConfig(modules=20, rate=20, records_per_packet=5, duration=3.0)
    feeder = threading.Thread(target=simulate, args=(sim, "127.0.0.1", port))
    feeder.start()
    done = view_cli("--ip", "127.0.0.1", "--port", str(pub_port), "-o", str(tmp_path / "live.png"))
    feeder.join()
    assert done.returncode == 0, done.stderr
    assert "20/32 modules" in done.stdout and (tmp_path / "live.png").stat().st_size > 10_000


def test_no_readout_in_time_exits_2(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    done = view_cli("--ip", "127.0.0.1", "--port", str(port), "--timeout", "0.3")
    assert done.returncode == 2 and "nothing from" in done.stderr
