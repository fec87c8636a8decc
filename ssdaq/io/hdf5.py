"""HDF5 written with h5py in the form PyTables reads as its own Table, VLArray and Group nodes.

PyTables recognises a node by string attributes: the root and groups carry ``CLASS="GROUP"``,
``VERSION``, ``TITLE`` (the root also ``PYTABLES_FORMAT_VERSION``); a table is a 1-D chunked
compound dataset with ``CLASS="TABLE"``, ``VERSION="2.7"``, ``TITLE``, ``NROWS`` and a
``FIELD_<i>_NAME``/``FIELD_<i>_FILL`` pair per column; a VLArray is a 1-D variable-length
dataset with ``CLASS="VLARRAY"``. The attributes are fixed-length byte strings, as PyTables
writes them (``tables.open_file`` then shows titles and reads ``table.cols.iro[:]`` etc.).

Compression is gzip (deflate) with shuffle and fletcher32 checksums: PyTables reads deflate
everywhere, and h5py cannot write the bzip2 of the original files. Variable-length datasets
cannot take filters in HDF5, so VLArrays are stored uncompressed.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

PYTABLES_FORMAT_VERSION = "2.1"
TABLE_VERSION = "2.7"
VLARRAY_VERSION = "1.4"
GROUP_VERSION = "1.0"
CHUNK_BYTES = 128 * 1024  # about what PyTables picks for a table of this row size
RAW_CHUNK_ROWS = 1024


def set_attrs(node: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        if isinstance(value, str):  # fixed-length UTF-8, which PyTables reads back as str
            data = value.encode()
            node.attrs.create(key, np.bytes_(data), dtype=h5py.string_dtype("utf-8", max(1, len(data))))
        else:
            node.attrs[key] = value


def init_file(f: h5py.File, title: str) -> None:
    """Mark a new file's root group as a PyTables file titled ``title``."""
    set_attrs(f, {"CLASS": "GROUP", "PYTABLES_FORMAT_VERSION": PYTABLES_FORMAT_VERSION,
                   "TITLE": title, "VERSION": GROUP_VERSION})


def group(f: h5py.File, name: str, title: str) -> h5py.Group:
    """The group ``/name`` (created with its PyTables attributes if missing)."""
    if name in f:
        return f[name]
    g = f.create_group(name)
    set_attrs(g, {"CLASS": "GROUP", "TITLE": title, "VERSION": GROUP_VERSION})
    return g


def create_table(parent: h5py.Group, name: str, dtype: np.dtype, title: str,
                 attrs: Mapping[str, Any] | None = None, compression_level: int = 4,
                 chunk_rows: int | None = None) -> h5py.Dataset:
    """An empty, extendible PyTables-compatible table of ``dtype`` rows (``chunk_rows`` per
    chunk; default: about 128 KB, which a small table written once does not need)."""
    chunk_rows = max(1, chunk_rows or CHUNK_BYTES // dtype.itemsize)
    filters: dict[str, Any] = {"shuffle": True, "fletcher32": True}
    if compression_level:
        filters.update(compression="gzip", compression_opts=compression_level)
    ds = parent.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                               chunks=(chunk_rows,), **filters)
    fields: dict[str, Any] = {"CLASS": "TABLE", "VERSION": TABLE_VERSION, "TITLE": title,
                              "NROWS": np.int64(0)}
    for i, field_name in enumerate(dtype.names or ()):
        fields[f"FIELD_{i}_NAME"] = field_name
        fields[f"FIELD_{i}_FILL"] = np.zeros((), dtype[field_name].base)[()]
    set_attrs(ds, {**fields, **(attrs or {})})
    return ds


def create_vlarray(parent: h5py.Group, name: str, title: str) -> h5py.Dataset:
    """An empty, extendible PyTables-compatible VLArray of uint8 rows (raw payloads)."""
    ds = parent.create_dataset(name, shape=(0,), maxshape=(None,),
                               dtype=h5py.vlen_dtype(np.uint8), chunks=(RAW_CHUNK_ROWS,))
    set_attrs(ds, {"CLASS": "VLARRAY", "VERSION": VLARRAY_VERSION, "TITLE": title})
    return ds


def append(ds: h5py.Dataset, rows: np.ndarray | Sequence[np.ndarray]) -> None:
    """Append ``rows`` (a structured array, or uint8 arrays for a VLArray) at the end of ``ds``."""
    n = len(rows)
    if n == 0:
        return
    start = ds.shape[0]
    ds.resize((start + n,))
    if ds.dtype.kind == "O":
        values = np.empty(n, object)
        for i, payload in enumerate(rows):  # one by one: equal lengths must not make a 2-D array
            values[i] = payload
        # write_direct: slice assignment would broadcast equal-length payloads into 2-D and fail
        ds.write_direct(values, np.s_[0:n], np.s_[start:start + n])
    else:
        ds[start:] = rows
        ds.attrs["NROWS"] = np.int64(start + n)
