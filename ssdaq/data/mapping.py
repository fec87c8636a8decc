"""Pixel mappings of a TARGET module, the CHEC-S focal-plane geometry and the trigger tables.

A readout row holds a module's 64 amplitudes in "ss-line" order, the order the module sends them.
Two tables from the original SSDAQ reorder a row (``mapped[:, j] = raw[:, table[j]]``):

* ``ssl2asic_ch``: TARGET ASIC-channel order, the pixel order of TargetCalib ("tmpix");
* ``ssl2colrow``: col/row order, position ``j`` being row ``j // 8``, column ``j % 8`` of the
  module's 8 x 8 pixel grid as seen from the module.

The camera geometry places those 8 x 8 grids on the 48 x 48 pixel focal plane. It was derived
from the CHEC-S pixel table that sstcam-simulation ships (``data/mapping/checs.txt``, the columns
of TargetCalib's ``Mapping``, which ``CameraConfiguration("1.1.0")`` provides) and checked against
it pixel by pixel in the tests:

* the modules sit in a 6 x 6 grid of 8 x 8 blocks without its four corners; slots fill the grid
  column by column from the high-x column (grid column 5) to the low-x one, and within a column
  from the high-y row (grid row 5) downwards;
* modules in grid rows 0, 2 and 4 are mounted turned by 180 degrees;
* rows grow with the camera's y and columns with its x (TargetCalib's ``row``/``col``), so draw
  with the origin at the lower left.

The backplane numbers a module's 16 super-pixels (SPs) by trigger mask bit, in one of two orders
(flavours A and B) depending on the module's slot; ``MASK2SP_*``/``SP2MASK_*`` convert within a
module and ``SP2BPTRIGG``/``BPTRIGG2SP`` camera-wide (the 512 SPs of the trigger packets).
"""

import numpy as np


def _frozen(values: list[int] | list[tuple[int, int]] | np.ndarray) -> np.ndarray:
    array = np.array(values, dtype=np.intp)
    array.setflags(write=False)
    return array


# fmt: off
ssl2colrow = _frozen([
    8, 1, 5, 6, 41, 43, 51, 47, 11, 14, 13, 7, 44, 36, 42, 46, 12, 2, 4, 15, 38, 37, 33, 45,
    10, 16, 9, 19, 40, 39, 34, 48, 26, 28, 20, 31, 56, 54, 35, 63, 17, 3, 18, 25, 62, 53, 32, 61,
    27, 30, 21, 22, 58, 52, 59, 55, 24, 0, 29, 23, 49, 57, 50, 60,
])
ssl2asic_ch = _frozen([
    29, 23, 21, 22, 30, 27, 24, 0, 25, 31, 20, 18, 28, 26, 17, 3, 2, 16, 10, 12, 19, 4, 15, 9,
    1, 8, 11, 14, 6, 7, 5, 13, 62, 56, 54, 53, 59, 60, 55, 50, 57, 58, 52, 49, 61, 63, 32, 35,
    51, 47, 42, 46, 33, 34, 45, 48, 44, 36, 41, 43, 40, 38, 39, 37,
])
# fmt: on

MODULE_SIDE = 8  # pixels along one side of a module
GRID_SIDE = 6  # modules along one side of the focal plane (corners empty)
CAMERA_SHAPE = (GRID_SIDE * MODULE_SIDE, GRID_SIDE * MODULE_SIDE)  # (rows, cols) = (48, 48)

_CORNERS = {(0, 0), (0, GRID_SIDE - 1), (GRID_SIDE - 1, 0), (GRID_SIDE - 1, GRID_SIDE - 1)}
MODULE_GRID = _frozen(
    [
        (row, col)
        for col in reversed(range(GRID_SIDE))
        for row in reversed(range(GRID_SIDE))
        if (row, col) not in _CORNERS
    ]
)
"""(grid row, grid column) of each slot; the module covers pixel rows ``8*row .. 8*row+7``."""


def _pixel_positions() -> tuple[np.ndarray, np.ndarray]:
    colrow = np.argsort(ssl2colrow)  # ss-line pixel s sits at col/row position colrow[s]
    row_in, col_in = colrow // MODULE_SIDE, colrow % MODULE_SIDE
    grid_row, grid_col = MODULE_GRID[:, :1], MODULE_GRID[:, 1:]
    turned = grid_row % 2 == 0
    rows = grid_row * MODULE_SIDE + np.where(turned, MODULE_SIDE - 1 - row_in, row_in)
    cols = grid_col * MODULE_SIDE + np.where(turned, MODULE_SIDE - 1 - col_in, col_in)
    return _frozen(rows.reshape(-1)), _frozen(cols.reshape(-1))


_ROWS, _COLS = _pixel_positions()


def pixel_positions() -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane ``(row, col)`` of all 2048 pixels, in raw readout order (module-major).

    Element ``64 * slot + s`` is ss-line pixel ``s`` of module ``slot``, i.e. ``data.ravel()`` of
    an SSReadout lines up with these arrays. The arrays are shared and read-only.
    """
    return _ROWS, _COLS


def camera_image(data: np.ndarray) -> np.ndarray:
    """A 48 x 48 image (row = y, col = x) of a 32 x 64 readout; NaN at the empty corners."""
    image = np.full(CAMERA_SHAPE, np.nan)
    image[_ROWS, _COLS] = np.asarray(data, dtype=float).reshape(-1)
    return image


# Backplane trigger mask bit <-> super-pixel within one module, for the two module flavours.
MASK2SP_A = _frozen([6, 7, 14, 12, 4, 5, 15, 13, 3, 2, 8, 11, 1, 0, 10, 9])
MASK2SP_B = _frozen([9, 10, 0, 1, 11, 8, 2, 3, 13, 15, 5, 4, 12, 14, 7, 6])
SP2MASK_A = _frozen([13, 12, 9, 8, 4, 5, 0, 1, 10, 15, 14, 11, 3, 7, 2, 6])
SP2MASK_B = _frozen([2, 3, 6, 7, 11, 10, 15, 14, 5, 0, 1, 4, 12, 8, 13, 9])
MODULE_MASK_FLAVOUR = _frozen([0, 1, 0, 1] + [1, 0] * 12 + [0, 1, 0, 1])  # 0 = A, 1 = B


def _camera_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _frozen(
        np.concatenate(
            [(b if flavour else a) + 16 * tm for tm, flavour in enumerate(MODULE_MASK_FLAVOUR)]
        )
    )


SP2BPTRIGG = _camera_table(MASK2SP_A, MASK2SP_B)
"""Camera-wide table of the original ``get_SP2bptrigg_mapping()`` (built from the Mask2SP
tables)."""
BPTRIGG2SP = _camera_table(SP2MASK_A, SP2MASK_B)
"""Camera-wide table of the original ``get_bptrigg2SP_mapping()``; the inverse of SP2BPTRIGG."""
