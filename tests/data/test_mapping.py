"""Pixel tables, the CHEC-S focal-plane geometry and the SP <-> backplane trigger tables."""

import numpy as np
import pytest

from ssdaq.data.mapping import (
    BPTRIGG2SP,
    CAMERA_SHAPE,
    MASK2SP_A,
    MASK2SP_B,
    MODULE_GRID,
    SP2BPTRIGG,
    SP2MASK_A,
    SP2MASK_B,
    camera_image,
    pixel_positions,
    ssl2asic_ch,
    ssl2colrow,
)
from ssdaq.data.readout import N_CAM_PIX, N_TM, N_TM_PIX
from ssdaq.data.trigger import N_SP

# (slot, tmpix) -> (row, col) read from the CHEC-S pixel table (TargetCalib Mapping columns) that
# sstcam-simulation ships as data/mapping/checs.txt: a sample over every grid column, both module
# orientations and all four ASICs.
CHECS_TABLE_SAMPLE = {
    (0, 0): (32, 45),
    (1, 0): (31, 42),
    (4, 0): (47, 34),
    (5, 20): (36, 36),
    (9, 37): (0, 32),
    (10, 44): (45, 31),
    (12, 21): (26, 26),
    (15, 0): (0, 29),
    (16, 59): (40, 21),
    (19, 21): (21, 21),
    (22, 8): (45, 11),
    (24, 33): (28, 12),
    (27, 37): (0, 8),
    (28, 37): (32, 0),
    (30, 47): (19, 1),
    (31, 63): (10, 5),
}


@pytest.mark.parametrize("table", [ssl2colrow, ssl2asic_ch])
def test_tables_are_permutations_of_the_64_pixels(table: np.ndarray) -> None:
    assert sorted(table.tolist()) == list(range(N_TM_PIX))


@pytest.mark.parametrize("table", [ssl2colrow, ssl2asic_ch, *pixel_positions(), MODULE_GRID])
def test_shared_tables_are_read_only(table: np.ndarray) -> None:
    with pytest.raises(ValueError):
        table[0] = 0


def test_every_focal_plane_pixel_but_the_corners_is_used_once() -> None:
    rows, cols = pixel_positions()
    assert len(rows) == len(cols) == N_CAM_PIX
    used = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert len(used) == N_CAM_PIX
    corner_blocks = {(r, c) for r in (0, 5) for c in (0, 5)}
    expected = {
        (r, c)
        for r in range(CAMERA_SHAPE[0])
        for c in range(CAMERA_SHAPE[1])
        if (r // 8, c // 8) not in corner_blocks
    }
    assert used == expected


def test_each_module_fills_the_8x8_block_of_its_grid_cell() -> None:
    rows, cols = (a.reshape(N_TM, N_TM_PIX) for a in pixel_positions())
    for slot, (grid_row, grid_col) in enumerate(MODULE_GRID):
        assert set((rows[slot] // 8).tolist()) == {grid_row}
        assert set((cols[slot] // 8).tolist()) == {grid_col}


@pytest.mark.parametrize(("slot_tmpix", "row_col"), CHECS_TABLE_SAMPLE.items())
def test_positions_agree_with_the_checs_pixel_table(slot_tmpix, row_col) -> None:
    slot, tmpix = slot_tmpix
    rows, cols = (a.reshape(N_TM, N_TM_PIX) for a in pixel_positions())
    raw = ssl2asic_ch[tmpix]  # TargetCalib's pixel order is the ASIC-mapped order
    assert (rows[slot, raw], cols[slot, raw]) == row_col


def test_a_module_keeps_its_col_row_layout_up_to_a_half_turn() -> None:
    rows, cols = (a.reshape(N_TM, N_TM_PIX) % 8 for a in pixel_positions())
    colrow = np.empty(N_TM_PIX, dtype=int)
    colrow[ssl2colrow] = np.arange(N_TM_PIX)  # ss-line pixel -> col/row position
    for slot in range(N_TM):
        upright = (rows[slot] == colrow // 8).all() and (cols[slot] == colrow % 8).all()
        turned = (rows[slot] == 7 - colrow // 8).all() and (cols[slot] == 7 - colrow % 8).all()
        assert upright != turned


def test_camera_image_places_each_amplitude_at_its_pixel() -> None:
    data = np.arange(N_CAM_PIX, dtype=float).reshape(N_TM, N_TM_PIX)
    image = camera_image(data)
    rows, cols = pixel_positions()
    assert image.shape == CAMERA_SHAPE
    np.testing.assert_array_equal(image[rows, cols], data.ravel())
    assert np.isnan(image[:8, :8]).all() and np.isnan(image[-8:, -8:]).all()
    assert np.count_nonzero(np.isnan(image)) == 4 * 64


# --- SP <-> backplane trigger tables --------------------------------------------------------


@pytest.mark.parametrize(("mask2sp", "sp2mask"), [(MASK2SP_A, SP2MASK_A), (MASK2SP_B, SP2MASK_B)])
def test_module_tables_are_inverse_permutations(mask2sp, sp2mask) -> None:
    assert mask2sp[sp2mask].tolist() == list(range(16))


def test_camera_tables_are_inverse_permutations_within_each_module() -> None:
    assert SP2BPTRIGG[BPTRIGG2SP].tolist() == list(range(N_SP))
    assert (SP2BPTRIGG // 16).tolist() == [sp // 16 for sp in range(N_SP)]


def test_camera_table_uses_flavour_b_for_module_1_and_a_for_module_5() -> None:
    assert (SP2BPTRIGG[16:32] - 16).tolist() == MASK2SP_B.tolist()
    assert (SP2BPTRIGG[80:96] - 80).tolist() == MASK2SP_A.tolist()
