"""HDF5 files of the published streams: layouts, PyTables-compatible writing, rotation, reading.

``layouts`` says what each writer stores; ``hdf5`` writes it with h5py so PyTables reads it as
its own; ``files`` names and publishes files (never overwriting one); ``recovery`` verifies or
salvages what a killed writer left; ``reader`` reads files back. The service that fills them is
``ssdaq-writer`` (``ssdaq.tools.writer``). Needs h5py (the "tools" extra; Debian: python3-h5py).
"""
