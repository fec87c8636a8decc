"""``ssdaq-writer STREAM``: record a published stream into rotating HDF5 files (a service).

STREAM is ``readout`` (the slow-signal layout of the original SSDAQ files, ``/SlowSignal/readout``
plus ``/SlowSignal/tel_table``), ``trigger`` or ``timestamp``. Under systemd it runs as
``ssdaq-writer@STREAM.service``: ``Type=notify`` with READY/STATUS/WATCHDOG/STOPPING, journald,
SIGHUP reload and a command socket (``ssdaqctl writer-STREAM status``, ``… rotate``), all from the
receiver framework. Files go to ``[output] directory``, by default ``$STATE_DIRECTORY/STREAM``
(the unit sets ``StateDirectory=ssdaq/data``: ``/var/lib/ssdaq/data/STREAM``).

This module holds the command line; the settings are :mod:`ssdaq.receivers.writer_config` and the
service :mod:`ssdaq.receivers.writer` (imported only to run, since it needs h5py).
"""

import sys
from pathlib import Path

from ssdaq.core import config as configlib
from ssdaq.core import main as receiver_main
from ssdaq.core.cli import Parser
from ssdaq.core.errors import EX_OK, EX_UNAVAILABLE, EX_USAGE
from ssdaq.receivers.writer_config import CLASSES, CONFIGS, STREAMS, service_name


def parser() -> Parser:
    p = Parser(
        prog="ssdaq-writer",
        description="Record a published ssdaq stream into HDF5 files that rotate by size and age, "
        "are never overwritten and are complete once named *.hdf5 (*.hdf5.part is being written).",
        epilog=f"Configuration: {receiver_main.CONFIG_DIR}/writer-STREAM.toml unless --config is "
        "given (built-in defaults if it does not exist). Commands: ssdaqctl writer-STREAM "
        "status|rotate|reload.",
    )
    p.add_argument("stream", nargs="?", choices=STREAMS, help="the stream to record")
    receiver_main.add_daemon_options(p, "writer")
    return p


def write_default_configs(directory: Path) -> None:
    for stream, cls in CONFIGS.items():
        configlib.write_overrides(directory, service_name(stream), cls(), f"`ssdaq-writer {stream}`")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.write_default_configs:
        write_default_configs(args.write_default_configs)
        return EX_OK
    if not args.stream:
        parser().print_usage(sys.stderr)
        return EX_USAGE
    try:
        import h5py  # noqa: F401  (only to say clearly that it is missing)
    except ImportError:
        print("ssdaq-writer: needs h5py (Debian: apt install python3-h5py; pip: ssdaq[tools])",
              file=sys.stderr)
        return EX_UNAVAILABLE
    # the framework's own entry point runs it: config, logging, sd_notify, exit codes
    forwarded = [f"ssdaq.receivers.writer:{CLASSES[args.stream]}"]
    for flag in ("config", "log_level"):
        if (value := getattr(args, flag)) is not None:
            forwarded += [f"--{flag.replace('_', '-')}", str(value)]
    forwarded += [f for f in ("--check-config", "--print-config") if getattr(args, f[2:].replace("-", "_"))]
    return receiver_main.main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
