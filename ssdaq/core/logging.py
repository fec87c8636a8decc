"""Log handlers: structured journald records under systemd, readable lines on stderr otherwise.

Journal fields: ``SYSLOG_IDENTIFIER=ssdaq-<name>``, ``SSDAQ_RECEIVER=<name>``, ``PRIORITY``,
``CODE_*``, and every ``extra=`` key that starts with ``SSDAQ_`` (``SSDAQ_COUNTER``, ``SSDAQ_PEER``,
``SSDAQ_CONFIG_FILE``, ``SSDAQ_CONFIG_KEY``, …; a list value repeats the field, as ``SSDAQ_MODULE``
does for every module a record is about). The stderr fallback prints the same message text.
"""

import logging
import sys
import traceback

from systemd import journal

from ssdaq.core import systemd

FIELD_PREFIX = "SSDAQ_"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# syslog priorities of the logging levels
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFieldHandler(logging.Handler):
    """Writes each record to journald with the receiver's identity and the ``SSDAQ_*`` extras."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.fields = {"SYSLOG_IDENTIFIER": f"ssdaq-{name}", "SSDAQ_RECEIVER": name}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            fields = {**self.fields, "PRIORITY": _PRIORITY.get(record.levelno, 6), "LOGGER": record.name,
                      "CODE_FILE": record.pathname, "CODE_LINE": record.lineno,
                      "CODE_FUNC": record.funcName,
                      **{k: v for k, v in vars(record).items() if k.startswith(FIELD_PREFIX)}}
            journal.sendv(f"MESSAGE={message}", *_lines(fields))
        except Exception:
            self.handleError(record)


def _lines(fields: dict[str, object]) -> list[str]:
    """``KEY=value`` lines; a list or tuple gives its key once per item, which journald keeps as
    one field with several values (``journalctl SSDAQ_MODULE=5`` finds a record about 0-31)."""
    return [f"{k}={item}" for k, v in fields.items()
            for item in (v if isinstance(v, (list, tuple)) else (v,))]


def setup(name: str, level: str = "info") -> logging.Logger:
    """Route the ``ssdaq`` logger to journald (when stderr is the journal) or to stderr.

    Called once per process by the daemon entry point; ``name`` is the receiver's service name.
    """
    root = logging.getLogger("ssdaq")
    for old in list(root.handlers):
        root.removeHandler(old)
    if systemd.stderr_is_journal():
        handler: logging.Handler = JournalFieldHandler(name)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s ssdaq-" + name + ": %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    root.propagate = False
    return root


#: the level given on the command line (``--log-level``), which outranks the file's
_pinned: str | None = None


def pin_level(level: str | None) -> None:
    """Keep ``level`` (from ``--log-level``; None: none given) in force across reloads, which
    otherwise apply the file's ``[log] level``."""
    global _pinned
    _pinned = level


def set_level(level: str) -> None:
    """Apply the file's new level (on reload), unless the command line pinned one."""
    logging.getLogger("ssdaq").setLevel(LEVELS[_pinned or level])
