"""``ssdaq-view``: one slow-signal readout as a camera image (PNG).

The readout is the latest one published on the readout stream, or row N of an HDF5 file written by
``ssdaq-writer readout``. Pixels are placed by ``ssdaq.data.mapping.camera_image`` (the CHEC-S
focal plane, 48 x 48 pixels seen with the camera's x to the right and y up), coloured by
amplitude in mV with a colour bar; each module's 8 x 8 block is outlined and labelled with its
slot; absent modules (NaN) are grey and labelled so, the empty corners white. Rendering uses
matplotlib's Agg backend only: no display needed.
"""

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ssdaq import streams
from ssdaq.core.cli import Parser
from ssdaq.data.mapping import CAMERA_SHAPE, MODULE_GRID, MODULE_SIDE, camera_image
from ssdaq.data.readout import N_TM, SSReadout
from ssdaq.subscribers import ReadoutSubscriber, Subscriber

EXIT_NO_DATA = 2
ABSENT_COLOUR = "0.8"


def latest(sub: "Subscriber[SSReadout]", timeout_s: float) -> SSReadout:
    """The newest readout: waits for one, then skips to the last one already queued."""
    while True:
        decoded = sub.decode_many(sub.recv_raw(timeout_s, max_messages=100_000))
        if decoded:
            return decoded[-1]


def from_file(path: str | Path, index: int) -> SSReadout:
    """Row ``index`` (negative counts from the end) of a slow-signal HDF5 file."""
    from ssdaq.io.reader import SSDataReader  # needs h5py: only when reading a file

    with SSDataReader(path, mapping="raw") as reader:
        reader[index]  # fills the reader's current row
        return reader.ssreadout


def render(readout: SSReadout, vmin: float | None = None, vmax: float | None = None,
           title: str | None = None) -> Any:
    """A matplotlib Figure of the readout (Agg canvas; ``fig.savefig(path)`` writes it)."""
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(7.5, 6.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = _colormap()
    image = np.ma.masked_invalid(camera_image(readout.data))
    rows, cols = CAMERA_SHAPE
    shown = ax.imshow(image, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                      interpolation="nearest", extent=(-0.5, cols - 0.5, -0.5, rows - 0.5))
    present = set(readout.modules_present.tolist())
    outline = [patheffects.withStroke(linewidth=1.5, foreground="white")]
    for slot, (grid_row, grid_col) in enumerate(MODULE_GRID):
        x0, y0 = grid_col * MODULE_SIDE - 0.5, grid_row * MODULE_SIDE - 0.5
        absent = slot not in present
        ax.add_patch(Rectangle((x0, y0), MODULE_SIDE, MODULE_SIDE, linewidth=0.9,
                               edgecolor="black", facecolor=ABSENT_COLOUR, fill=absent))
        ax.text(x0 + 0.4, y0 + MODULE_SIDE - 0.6, f"{slot} absent" if absent else str(slot),
                fontsize=6, va="top", ha="left", path_effects=outline)
    fig.colorbar(shown, ax=ax, label="amplitude (mV)")
    ax.set_xlabel("x (pixel column)")
    ax.set_ylabel("y (pixel row)")
    cpu = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(readout.cpu_t_s))
    ax.set_title(title or f"readout {readout.iro}   TACK {readout.time}\n{cpu}   "
                 f"{len(present)}/{N_TM} modules", fontsize=10)
    return fig


def _colormap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="none")  # absent modules get a grey patch


def parser() -> Parser:
    p = Parser(
        prog="ssdaq-view",
        description="Render a slow-signal readout as a camera image (PNG): the latest one "
        "published on the readout stream, or one from an HDF5 file.",
        epilog=f"Exit status 0, {EXIT_NO_DATA} when no readout arrived within --timeout, "
        "1 when the file has no such row.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("camera.png"), help="PNG to write")
    p.add_argument("--file", type=Path, help="an HDF5 file of ssdaq-writer readout")
    p.add_argument("--index", type=int, default=-1, help="row of --file (default -1: the last)")
    p.add_argument("--ip", default=streams.PUB_IP, help=f"publisher address ({streams.PUB_IP})")
    p.add_argument("--port", type=int, default=streams.get("readout").pub_port)
    p.add_argument("--endpoint", help="full zmq endpoint, overrides --ip and --port")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a readout")
    p.add_argument("--vmin", type=float, help="amplitude at the bottom of the colour scale (mV)")
    p.add_argument("--vmax", type=float, help="amplitude at the top of the colour scale (mV)")
    p.add_argument("--title", help="title instead of readout number, TACK and time")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.file is not None:
        try:
            readout = from_file(args.file, args.index)
        except (OSError, IndexError, KeyError, RuntimeError) as e:
            print(f"ssdaq-view: {args.file}: {e}", file=sys.stderr)
            return 1
    else:
        with ReadoutSubscriber(args.ip, args.port, endpoint=args.endpoint) as sub:
            try:
                readout = latest(sub, args.timeout)
            except TimeoutError as e:
                print(f"ssdaq-view: {e}", file=sys.stderr)
                return EXIT_NO_DATA
    render(readout, args.vmin, args.vmax, args.title).savefig(args.output)
    print(f"{args.output}: readout {readout.iro}, {len(readout.modules_present)}/{N_TM} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
