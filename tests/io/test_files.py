"""File naming, publishing and verification: a complete file is never overwritten or corrupt."""

import hashlib
import subprocess
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.final.name, f"{f.final.name}.sha256"]


def test_a_complete_file_has_a_checksum_sha256sum_verifies_and_that_is_never_replaced(
        tmp_path: Path) -> None:
    f = open_file(tmp_path)
    f.append(readout_rows([readout(1).pack()])[0])
    path = f.close()
    checksum = Path(f"{path}.sha256")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checksum.read_text() == f"{digest}  {path.name}\n"
    done = subprocess.run(["sha256sum", "-c", checksum.name], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0 and f"{path.name}: OK" in done.stdout
    with pytest.raises(FileExistsError):
        files.write_checksum(path)
    assert checksum.read_text() == f"{digest}  {path.name}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, checksum.name]


def test_run_chunks_are_named_by_obs_id_run_start_and_chunk_and_continue_after_the_highest(
        tmp_path: Path) -> None:
    stamp = "20991204T210000Z"
    assert files.next_chunk(tmp_path, "readout", 123, stamp) == 0
    first = files.OpenFile(tmp_path, files.run_stems("readout", 123, stamp, 0), LAYOUT, 1)
    assert first.part.name == "readout_obs000123_20991204T210000Z_000.hdf5.part"
    assert files.next_chunk(tmp_path, "readout", 123, stamp) == 1, "a .part counts"
    (tmp_path / "readout_obs000123_20991204T210000Z_004_salvaged.hdf5").touch()
    (tmp_path / "readout_obs000124_20991204T220000Z_009.hdf5").touch()  # another run
    (tmp_path / "trigger_obs000123_20991204T210000Z_007.hdf5").touch()  # another prefix
    assert files.next_chunk(tmp_path, "readout", 123, stamp) == 5
    second = files.OpenFile(tmp_path, files.run_stems("readout", 123, stamp, 0), LAYOUT, 1)
    assert second.part.name.endswith("_001.hdf5.part"), "a taken chunk is skipped"
    names = [first.close().name, second.close().name]
    continuous = open_file(tmp_path).close().name  # now: before the (future) runs
    assert [p.name for p in reader.data_files(tmp_path)] == [continuous, *names,
        "readout_obs000123_20991204T210000Z_004_salvaged.hdf5",
        "readout_obs000124_20991204T220000Z_009.hdf5"]
