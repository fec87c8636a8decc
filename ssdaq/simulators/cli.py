"""``ssdaq-sim``: one subcommand per camera stream, each sending the camera's own bytes.

A simulator is a module with ``add_parser(subparsers)`` (which registers its subcommand and sets
``run`` as the default ``run`` attribute) and ``run(args) -> int``; adding one is one line in
``SIMULATORS``. A socket error (say, a source address that cannot be bound) ends the run with
one line and exit code 69, as for the daemons.
"""

import argparse
import importlib
import sys

from ssdaq.core.cli import Parser
from ssdaq.core.errors import EX_UNAVAILABLE

SIMULATORS = (
    "ssdaq.simulators.tm",
    "ssdaq.simulators.trigger",
    "ssdaq.simulators.timing",
    "ssdaq.simulators.log",
    "ssdaq.simulators.replay",
)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ssdaq-sim", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(title="simulators", metavar="SIMULATOR", required=True)
    for name in SIMULATORS:
        importlib.import_module(name).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except OSError as exc:
        print(f"ssdaq-sim: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
