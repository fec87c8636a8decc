"""Exceptions and process exit codes (sysexits.h) shared by every ssdaq program.

The exit code tells systemd and the operator what kind of failure ended a daemon: the units set
``RestartPreventExitStatus=78`` so a rejected configuration does not become a restart loop.
"""

import os

from ssdaq.data.errors import FormatError  # re-exported: receivers raise and catch it by this name too

__all__ = ["EX_OK", "EX_USAGE", "EX_UNAVAILABLE", "EX_SOFTWARE", "EX_CONFIG", "SsdaqError", "ConfigError",
           "UnavailableError", "FormatError", "CommandError"]

EX_OK = os.EX_OK  # 0: stopped on request, after flushing
EX_USAGE = os.EX_USAGE  # 64: bad command line
EX_UNAVAILABLE = os.EX_UNAVAILABLE  # 69: expected socket missing, bind failed
EX_SOFTWARE = os.EX_SOFTWARE  # 70: unexpected exception (the only case with a traceback)
EX_CONFIG = os.EX_CONFIG  # 78: configuration rejected


class SsdaqError(Exception):
    """Base of the errors that carry their own operator-facing message and exit code."""

    exit_code = EX_SOFTWARE


class ConfigError(SsdaqError):
    """A configuration file or value was rejected; the message names the file and the key."""

    exit_code = EX_CONFIG

    def __init__(self, file: str, key: str, msg: str) -> None:
        self.file, self.key, self.msg = file, key, msg
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + msg)


class UnavailableError(SsdaqError):
    """A socket the receiver needs is missing or cannot be bound; the message names the address."""

    exit_code = EX_UNAVAILABLE


class CommandError(Exception):
    """A command was refused (unknown, bad argument); the text goes back as ``{"ok": false}``."""
