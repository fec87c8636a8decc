"""Where the TelDataReceiver reads the telescope pointing: a fixed one, or a MySQL/MariaDB query.

A source's ``read()`` blocks (a database round trip) and returns one :class:`Pointing`; the
receiver calls it in a worker thread. Failures raise :class:`SourceError`, whose ``reason`` names
the counter to bump. The database password never comes from the source or the configuration:
:func:`read_credential` reads the file systemd's ``LoadCredential=`` provides.
"""

import math
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ssdaq.core.config import setting

# The ASTRI TCU tables stamp rows in 100 ns ticks since 1582-10-15 (the UUID epoch).
GREGORIAN_TO_UNIX_S = 12_219_292_800
ASTRI_QUERY = (
    "SELECT r.timetag, r.value, d.value"
    " FROM (SELECT timetag, value FROM TCU_ACTUAL_RA ORDER BY timetag DESC LIMIT 1) AS r,"
    " (SELECT timetag, value FROM TCU_ACTUAL_DEC ORDER BY timetag DESC LIMIT 1) AS d"
)
TIME_UNITS = ("gregorian_100ns", "unix_s")


class SourceError(Exception):
    """A poll that produced no pointing; ``reason`` names the loss counter."""

    def __init__(self, reason: str, msg: str) -> None:
        self.reason = reason
        super().__init__(msg)


@dataclass(frozen=True)
class Pointing:
    """Telescope pointing (degrees) at ``time_ns`` (UTC ns since the Unix epoch)."""

    time_ns: int
    ra: float
    dec: float


@dataclass(frozen=True)
class StaticSettings:
    """source = "static": a fixed pointing, stamped with the time of each poll."""

    ra_deg: float = setting(0.0, help="Right ascension published (degrees)")
    dec_deg: float = setting(0.0, help="Declination published (degrees)")


@dataclass(frozen=True)
class MySQLSettings:
    """source = "mysql": a query on the telescope database (MySQL or MariaDB, via PyMySQL)."""

    host: str = setting("localhost", help="Database server")
    port: int = setting(3306, help="Database port", min=1, max=65535)
    user: str = setting("ssdaq", help="Database user (needs SELECT on the tables queried)")
    database: str = setting("monitoring", help="Database (schema) name")
    query: str = setting(
        ASTRI_QUERY,
        help="Returns one row: time, ra (degrees), dec (degrees); the\n"
        "default reads the newest rows of the ASTRI TCU_ACTUAL_RA/DEC tables",
    )
    time_unit: str = setting(
        "gregorian_100ns",
        choices=TIME_UNITS,
        help="Unit of the time column: 100 ns ticks since 1582-10-15 (ASTRI), or\n"
        "seconds since 1970-01-01",
    )
    credential: str = setting(
        "teldata-db-password",
        help="Name of the systemd credential holding the password (LoadCredential=NAME:/path in\n"
        "the unit; read from $CREDENTIALS_DIRECTORY/NAME)",
    )


def read_credential(name: str) -> str:
    """Credential ``name`` from ``$CREDENTIALS_DIRECTORY``; a SourceError says what is missing."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SourceError(
            "no_credential",
            f"no credential {name!r}: $CREDENTIALS_DIRECTORY is not "
            f"set (the unit needs LoadCredential={name}:/path/to/password)",
        )
    path = Path(directory, name)
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as e:
        raise SourceError(
            "no_credential", f"no credential {name!r}: cannot read {path}: {e.strerror}"
        ) from None


def unix_ns(value: Any, unit: str) -> int:
    """Nanoseconds since the Unix epoch of a database time ``value`` in ``unit``."""
    if unit == "gregorian_100ns":
        return int(value) * 100 - GREGORIAN_TO_UNIX_S * 1_000_000_000
    return int(Decimal(str(value)) * 1_000_000_000)


def pointing_from_row(row: tuple | None, unit: str) -> Pointing:
    """Check and convert a query's row; SourceError("no_data") or ("bad_row")."""
    if row is None:
        raise SourceError("no_data", "the query returned no row")
    if len(row) < 3:
        raise SourceError("bad_row", f"the query must return time, ra, dec; got {len(row)} columns")
    try:
        point = Pointing(unix_ns(row[0], unit), float(row[1]), float(row[2]))
    except (TypeError, ValueError, ArithmeticError) as e:
        raise SourceError("bad_row", f"row {row!r}: {e}") from None
    if not (math.isfinite(point.ra) and math.isfinite(point.dec)):
        raise SourceError("bad_row", f"row {row!r}: ra and dec must be finite")
    return point


class StaticSource:
    """A fixed pointing from the configuration, stamped now."""

    def __init__(self, settings: StaticSettings) -> None:
        self.settings = settings

    def describe(self) -> str:
        return f"static ra {self.settings.ra_deg} deg, dec {self.settings.dec_deg} deg"

    def read(self) -> Pointing:
        return Pointing(time.time_ns(), self.settings.ra_deg, self.settings.dec_deg)

    def close(self) -> None:
        """Nothing to release."""


class MySQLSource:
    """Runs the configured query on one kept connection, reconnecting after any error.

    The connection is in autocommit mode: otherwise InnoDB would keep answering from the
    snapshot of the first query and the pointing would never change.
    """

    def __init__(self, settings: MySQLSettings, password: str, timeout_s: float) -> None:
        try:
            import pymysql  # imported here: the package works without PyMySQL unless this is used
        except ImportError:
            raise SourceError(
                "no_driver", "the mysql source needs PyMySQL (Debian: python3-pymysql)"
            ) from None
        self._pymysql = pymysql
        self.settings, self._password, self.timeout_s = settings, password, timeout_s
        self._conn: Any = None

    def describe(self) -> str:
        s = self.settings
        return f"mysql {s.user}@{s.host}:{s.port}/{s.database}"

    def read(self) -> Pointing:
        s = self.settings
        try:
            if self._conn is None:
                self._conn = self._pymysql.connect(
                    host=s.host,
                    port=s.port,
                    user=s.user,
                    password=self._password,
                    database=s.database,
                    connect_timeout=self.timeout_s,
                    read_timeout=self.timeout_s,
                    write_timeout=self.timeout_s,
                    autocommit=True,
                )
            with self._conn.cursor() as cursor:
                cursor.execute(s.query)
                row = cursor.fetchone()
        except (self._pymysql.MySQLError, OSError) as e:
            self.close()
            raise SourceError("db_errors", f"{self.describe()}: {e}") from None
        return pointing_from_row(row, s.time_unit)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except (self._pymysql.MySQLError, OSError):  # already broken: nothing to release
                pass
            self._conn = None
