"""HDF5 files of the published streams: layouts, PyTables-compatible writing, rotation, reading.

``layouts`` says what each writer stores; ``hdf5`` writes it with h5py so PyTables reads it as
its own; ``files`` names, rotates, publishes and recovers files; ``reader`` reads them back. The
service that fills them is ``ssdaq.tools.writer`` (``ssdaq-writer``). Needs h5py (the "tools"
extra; Debian: python3-h5py).
"""
