"""Leftover .part files: verified and published, or salvaged with the damaged original kept."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssdaq import runs
from ssdaq.io import files, hdf5, provenance, reader, recovery
from ssdaq.io.layouts import LAYOUTS, TRIGGER_DTYPE, TRIGGER_PATH, readout_rows
from tests.conftest import child_env
from tests.livepub import readout

LAYOUT = LAYOUTS["readout"]


def open_file(directory: Path, stream: str = "readout") -> files.OpenFile:
    return files.OpenFile(directory, stream, LAYOUTS[stream], compression_level=1)


def test_verify_reads_every_row_and_rejects_a_truncated_file(tmp_path: Path) -> None:
    f = open_file(tmp_path)
    f.append(readout_rows([readout(i).pack() for i in range(1, 30)])[0])
    path = f.close()
    assert recovery.verify(path, LAYOUT) == 29
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(OSError):
        recovery.verify(cut, LAYOUT)
    assert recovery.main(["verify", "readout", str(path)]) == 0
    assert recovery.main(["verify", "readout", str(cut)]) == 1


def test_recover_publishes_good_leftovers_and_marks_damaged_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = open_file(tmp_path)
    good.append(readout_rows([readout(i).pack() for i in range(1, 6)])[0])
    good.h5.close()  # as after a crash following the last flush: closed, but still .part
    (tmp_path / f"readout_19990101_000000{files.PART}").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    (tmp_path / f"other_19990101_000000{files.PART}").write_bytes(b"not mine")
    with caplog.at_level(logging.WARNING):
        published = recovery.recover(tmp_path, "readout", LAYOUT, logging.getLogger("test"))
    assert published == [good.final]
    assert reader.read_table(good.final)["iro"].tolist() == [1, 2, 3, 4, 5]
    assert (tmp_path / f"readout_19990101_000000{files.DAMAGED}").exists()
    assert (tmp_path / f"other_19990101_000000{files.PART}").exists(), "another prefix's file"
    assert "recovered" in caplog.text and "is damaged" in caplog.text


# A child that appends batches of 10 packets until a write fails for real: the file size limit
# (RLIMIT_FSIZE; Python ignores SIGXFSZ) stops a write half-way, as a full disk would.
WRITE_UNTIL_FAILURE = """
import os, sys
from pathlib import Path
from ssdaq.data import trigger
from ssdaq.io import files
from ssdaq.io.layouts import LAYOUTS, trigger_rows
f = files.OpenFile(Path(sys.argv[1]), "trigger", LAYOUTS["trigger"], 0)
for batch in range(1000):
    packets = [trigger.NominalTriggerPacketV1(tack_time=10 * batch + i, ro_count=10 * batch + i)
               for i in range(10)]
    try:
        f.append(trigger_rows([p.pack() for p in packets], 1)[0])
    except files.WriteFailed:
        print(10 * batch, flush=True)
        os._exit(3)
"""


def test_a_file_cut_by_a_failed_write_is_salvaged_up_to_the_damage(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    done = subprocess.run(["prlimit", "--fsize=4000000", "--", sys.executable, "-c",
                           WRITE_UNTIL_FAILURE, str(tmp_path)], env=child_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    written = int(done.stdout)  # rows whose append (and flush) succeeded
    [part] = tmp_path.glob(f"*{files.PART}")
    with pytest.raises(OSError):
        recovery.verify(part, LAYOUTS["trigger"])
    with caplog.at_level(logging.WARNING):
        [made] = recovery.recover(tmp_path, "trigger", LAYOUTS["trigger"], logging.getLogger("t"))
    assert made.name == part.name.replace(files.PART, "_salvaged.hdf5")
    rows = reader.read_table(made, TRIGGER_PATH)
    # a chunk is rewritten while it fills, so the damage can take the last chunk with it
    lost_at_most = max(hdf5.CHUNK_BYTES // TRIGGER_DTYPE.itemsize, hdf5.RAW_CHUNK_ROWS) + 10
    assert written - lost_at_most <= len(rows) <= written
    assert rows["tack_time"].tolist() == list(range(len(rows)))
    packets = list(reader.trigger_packets(made))
    assert [p.tack_time for p in packets] == list(range(len(rows))), "raw bytes kept in step"
    assert (tmp_path / part.name.replace(files.PART, files.DAMAGED)).exists()
    assert "rows saved in" in caplog.text


def test_a_recovered_or_salvaged_file_keeps_its_opening_provenance_and_says_how_it_closed(
        tmp_path: Path) -> None:
    """What the writer wrote at the opening (the observation) survives a crash, and the file
    says it was closed by recovery, with its rows and their times, whichever path it took."""
    good = open_file(tmp_path)
    good.annotate({"obs_id": np.int64(123), "chunk": np.int64(0), "stream": "readout"})
    rows = [readout(i) for i in range(1, 6)]
    good.append(readout_rows([r.pack() for r in rows])[0])
    good.h5.close()
    [made] = recovery.recover(tmp_path, "readout", LAYOUT, logging.getLogger("test"))
    a = provenance.read(made)["attributes"]
    assert (a["obs_id"], a["recovery"], a["rows"]) == (123, "recovered", 5)
    assert a["first_row_utc"] == runs.iso(rows[0].cpu_t_s * 10**9 + rows[0].cpu_t_ns)
    assert a["last_row_utc"] == runs.iso(rows[-1].cpu_t_s * 10**9 + rows[-1].cpu_t_ns)
    assert a["recovered_utc"] and not a.get("closed_utc")

    cut = open_file(tmp_path)
    cut.annotate({"obs_id": np.int64(124), "chunk": np.int64(0), "stream": "readout"})
    for start in range(1, 46, 15):  # three writes of a chunk each
        cut.append(readout_rows([readout(i).pack() for i in range(start, start + 15)])[0])
    cut.h5.close()
    os.truncate(cut.part, cut.part.stat().st_size - 100)  # the end of a write never made it
    [salvaged] = recovery.recover(tmp_path, "readout", LAYOUT, logging.getLogger("test"))
    a = provenance.read(salvaged)["attributes"]
    assert (a["obs_id"], a["recovery"]) == (124, "salvaged")
    assert 0 < a["rows"] == len(reader.read_table(salvaged)) < 45
    done = subprocess.run([sys.executable, "-m", "ssdaq.tools.info", str(salvaged)],
                          env=child_env(), capture_output=True, text=True, timeout=60, check=True)
    assert "closed never: salvaged at" in done.stdout and "observation 124 chunk 0" in done.stdout
    assert f"{a['rows']} rows, first {a['first_row_utc']}" in done.stdout
