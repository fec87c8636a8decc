"""Files written with h5py are PyTables files: PyTables-based analysis code reads them unchanged."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from ssdaq.io import hdf5
from ssdaq.io.files import OpenFile
from ssdaq.io.layouts import LAYOUTS, READOUT_DTYPE, readout_rows
from tests.livepub import readout

tables = pytest.importorskip("tables", reason="PyTables is not installed for this interpreter")


def write_slow_signal(directory: Path, n: int) -> Path:
    f = OpenFile(directory, "readout", LAYOUTS["readout"], compression_level=5)
    f.append(readout_rows([readout(i).pack() for i in range(1, n + 1)])[0])
    return f.close()


def test_pytables_reads_the_slow_signal_file_as_its_own(tmp_path: Path) -> None:
    path = write_slow_signal(tmp_path, 12)
    with tables.open_file(str(path)) as f:
        assert f.title == "CHEC-S Slow signal monitor data"
        table = f.root.SlowSignal.readout
        assert isinstance(table, tables.Table) and table.title == "Slow signal readout"
        assert f.root.SlowSignal._v_title == "Slow signal data"
        assert table.nrows == 12 and table.cols.iro[:].tolist() == list(range(1, 13))
        assert table.colnames == ["cpu_t", "cpu_t_ns", "cpu_t_s", "data", "iro", "time"]
        assert table.coldtypes["data"] == np.dtype(("<f4", (32, 64)))
        assert table.filters.complib == "zlib" and table.filters.complevel == 5
        assert table.filters.fletcher32 and table.filters.shuffle
        assert table.attrs.ss_data_version == 0 and table.attrs.ssdaq_version == "1.0.0"
        assert table.attrs.ssl2asic_ch[:3].tolist() == [29, 23, 21]
        row = next(table.iterrows(4, 5))  # the original SSDataReader reads it this way
        np.testing.assert_array_equal(row["data"], readout(5).data.astype(np.float32))
        assert isinstance(f.root.SlowSignal.tel_table, tables.Table)


def test_pytables_reads_raw_payloads_as_a_vlarray(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        hdf5.init_file(f, "t")
        raw = hdf5.create_vlarray(hdf5.group(f, "G", "g"), "raw", "payloads")
        hdf5.append(raw, [np.frombuffer(b"abc", np.uint8), np.frombuffer(b"", np.uint8),
                          np.frombuffer(b"\xfe\xca\x02", np.uint8)])
        same = [np.frombuffer(bytes([i]) * 5, np.uint8) for i in range(4)]
        hdf5.append(raw, same)  # equal lengths: still one row per payload
    with tables.open_file(str(tmp_path / "raw.h5")) as f:
        node = f.root.G.raw
        assert isinstance(node, tables.VLArray) and node.title == "payloads"
        assert [bytes(r) for r in node[:]] == [b"abc", b"", b"\xfe\xca\x02",
                                               *(bytes([i]) * 5 for i in range(4))]


def test_a_table_written_in_pieces_reads_back_whole(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = hdf5.create_table(f, "t", READOUT_DTYPE, "t")
        rows = readout_rows([readout(i).pack() for i in range(1, 40)])[0]["/SlowSignal/readout"]
        for start in range(0, 39, 7):
            hdf5.append(ds, rows[start:start + 7])
        assert ds.attrs["NROWS"] == 39
    with tables.open_file(str(tmp_path / "t.h5")) as f:
        assert f.root.t.read().tobytes() == rows.tobytes()
