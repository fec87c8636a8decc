"""The tools' command-line parser: argparse, but a bad command line exits with 64 (EX_USAGE).

argparse's own exit code 2 would read as "no answer" for ssdaqctl and "no data" for ssdaq-dump.
"""

import argparse
import sys

from ssdaq.core.errors import EX_USAGE


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors exit with EX_USAGE."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")
