"""File naming, publishing and verification: a complete file is never overwritten or corrupt."""

import logging
import time
from pathlib import Path

import pytest

from ssdaq.io import files, reader
from ssdaq.io.layouts import LAYOUTS, readout_rows
from tests.livepub import readout

LAYOUT = LAYOUTS["readout"]


def open_file(directory: Path) -> files.OpenFile:
    return files.OpenFile(directory, "readout", LAYOUT, compression_level=1)


def test_files_opened_in_the_same_second_get_distinct_names(tmp_path: Path) -> None:
    while time.time() % 1 > 0.8:  # keep the three opens inside one second
        time.sleep(0.05)
    opened = [open_file(tmp_path) for _ in range(3)]
    names = [f.close().name for f in opened]
    stem = names[0][: -len(files.EXT)]
    assert names == [f"{stem}.hdf5", f"{stem}_1.hdf5", f"{stem}_2.hdf5"]
    assert [p.name for p in reader.data_files(tmp_path)] == names


def test_publishing_never_replaces_an_existing_file(tmp_path: Path) -> None:
    f = open_file(tmp_path)
    f.append(readout_rows([readout(1).pack()])[0])
    f.final.write_bytes(b"somebody else's data")  # appears between open and close
    published = f.close()
    assert published != f.final and published.name.endswith("_1.hdf5")
    assert f.final.read_bytes() == b"somebody else's data"
    assert reader.read_table(published)["iro"].tolist() == [1]
    assert not f.part.exists()


def test_a_part_file_exists_only_while_writing(tmp_path: Path) -> None:
    f = open_file(tmp_path)
    assert f.part.exists() and f.part.name.endswith(".hdf5.part") and not f.final.exists()
    assert reader.data_files(tmp_path) == []
    f.close()
    assert [p.name for p in tmp_path.iterdir()] == [f.final.name]


def test_verify_reads_every_row_and_rejects_a_truncated_file(tmp_path: Path) -> None:
    f = open_file(tmp_path)
    f.append(readout_rows([readout(i).pack() for i in range(1, 30)])[0])
    path = f.close()
    assert files.verify(path, LAYOUT) == 29
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(OSError):
        files.verify(cut, LAYOUT)
    assert files.main(["readout", str(path)]) == 0 and files.main(["readout", str(cut)]) == 1


def test_recover_publishes_good_leftovers_and_marks_damaged_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = open_file(tmp_path)
    good.append(readout_rows([readout(i).pack() for i in range(1, 6)])[0])
    good.h5.close()  # as after a crash following the last flush: closed, but still .part
    (tmp_path / f"readout_19990101_000000{files.PART}").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    (tmp_path / f"other_19990101_000000{files.PART}").write_bytes(b"not mine")
    with caplog.at_level(logging.WARNING):
        published = files.recover(tmp_path, "readout", LAYOUT, logging.getLogger("test"))
    assert published == [good.final]
    assert reader.read_table(good.final)["iro"].tolist() == [1, 2, 3, 4, 5]
    assert (tmp_path / f"readout_19990101_000000{files.DAMAGED}").exists()
    assert (tmp_path / f"other_19990101_000000{files.PART}").exists(), "another prefix's file"
    assert "recovered" in caplog.text and "is damaged" in caplog.text
