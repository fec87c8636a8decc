"""Performance benchmarks: ``python -m bench`` (``make bench``) runs them all and prints figures.

Each module here exposing ``run()`` is one benchmark; it prints its figures, each beside a
baseline measured in the same run, and stays bounded in time.
"""
