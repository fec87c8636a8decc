"""File naming, publishing and verification: a complete file is never overwritten or corrupt."""

import time
from pathlib import Path

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
