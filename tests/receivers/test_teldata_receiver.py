"""TelDataReceiver as a process: a static pointing, and a real MariaDB on loopback."""

import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssdaq.data.messages import TelData, ns_from_time_utc
from ssdaq.receivers.teldata_sources import GREGORIAN_TO_UNIX_S
from tests.conftest import free_port
from tests.receivers.conftest import QUIET, nothing_more, publisher_config, subscribe
from tests.receivers.mariadb import MariaDB

PASSWORD = "s3cret pw"
T0_S = 1_700_000_000


def float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def astri_timetag(unix_ns: int) -> int:
    """ASTRI's time column: 100 ns ticks since 1582-10-15."""
    return (unix_ns + GREGORIAN_TO_UNIX_S * 10**9) // 100


@pytest.fixture(scope="module")
def database() -> Iterator[MariaDB]:
    """MariaDB with the ASTRI pointing tables and a SELECT-only user with a password."""
    directory = Path(tempfile.mkdtemp(prefix="ssdaq-db-", dir="/tmp"))
    server = MariaDB.start(directory)
    try:
        with server.root() as conn, conn.cursor() as c:
            c.execute("CREATE DATABASE monitoring")
            for table in ("TCU_ACTUAL_RA", "TCU_ACTUAL_DEC"):
                c.execute(
                    f"CREATE TABLE monitoring.{table} (timetag BIGINT UNSIGNED, value DOUBLE)"
                )
            c.execute("CREATE USER 'ssdaq'@'127.0.0.1' IDENTIFIED BY %s", (PASSWORD,))
            c.execute("GRANT SELECT ON monitoring.* TO 'ssdaq'@'127.0.0.1'")
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def point_at(db: MariaDB, unix_ns: int, ra: float, dec: float) -> None:
    """Add newer rows to both tables, as the telescope control unit does."""
    with db.root() as conn, conn.cursor() as c:
        c.execute(
            "INSERT INTO monitoring.TCU_ACTUAL_RA VALUES (%s, %s)", (astri_timetag(unix_ns), ra)
        )
        c.execute(
            "INSERT INTO monitoring.TCU_ACTUAL_DEC VALUES (%s, %s)", (astri_timetag(unix_ns), dec)
        )


def clear(db: MariaDB) -> None:
    with db.root() as conn, conn.cursor() as c:
        c.execute("DELETE FROM monitoring.TCU_ACTUAL_RA")
        c.execute("DELETE FROM monitoring.TCU_ACTUAL_DEC")


def teldata_config(pub_port: int, top: str, tables: str) -> str:
    """Top-level keys first: in TOML they would otherwise belong to the table above them."""
    return top + QUIET + publisher_config(pub_port) + tables


def mysql_config(pub_port: int, db: MariaDB, extra: str = "", timeout_s: float = 2.0) -> str:
    return teldata_config(
        pub_port,
        f'source = "mysql"\ninterval_s = 0.2\ntimeout_s = {timeout_s}\n',
        f'[mysql]\nhost = "127.0.0.1"\nport = {db.port}\n{extra}',
    )


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """A $CREDENTIALS_DIRECTORY holding the password, as LoadCredential= makes it."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "teldata-db-password").write_text(PASSWORD + "\n")
    return directory


def recv_teldata(sub) -> TelData:
    return TelData.FromString(sub.recv())


def test_static_source_publishes_the_configured_pointing_every_interval(
    start_receiver, zmq_context
) -> None:
    pub_port = free_port(socket.SOCK_STREAM)
    running = start_receiver(
        "teldata",
        teldata_config(
            pub_port, "interval_s = 0.2\n", "[static]\nra_deg = 83.633\ndec_deg = 22.0145\n"
        ),
    )
    sub = subscribe(zmq_context, pub_port)
    got = [recv_teldata(sub) for _ in range(4)]
    assert {(m.ra, m.dec) for m in got} == {(float32(83.633), float32(22.0145))}
    span = (ns_from_time_utc(got[-1].time) - ns_from_time_utc(got[0].time)) / 1e9
    assert 0.55 < span < 1.5, span  # 3 intervals of 0.2 s, on an absolute schedule
    assert abs(ns_from_time_utc(got[-1].time) / 1e9 - time.time()) < 2
    assert running.status()["last_pointing"]["ra_deg"] == pytest.approx(83.633)


def test_mysql_source_publishes_the_newest_rows_and_follows_new_ones(
    database: MariaDB, credentials: Path, start_receiver, zmq_context
) -> None:
    clear(database)
    point_at(database, T0_S * 10**9, 10.0, -5.0)
    point_at(database, T0_S * 10**9 + 123_456_700, 83.633, 22.0145)
    pub_port = free_port(socket.SOCK_STREAM)
    running = start_receiver(
        "teldata", mysql_config(pub_port, database), CREDENTIALS_DIRECTORY=str(credentials)
    )
    sub = subscribe(zmq_context, pub_port)
    first = recv_teldata(sub)
    assert (first.time.sec, first.time.nsec) == (T0_S, 123_456_700)
    assert (first.ra, first.dec) == (float32(83.633), float32(22.0145))
    point_at(database, (T0_S + 15) * 10**9, 84.0, 22.5)  # the telescope moves on
    deadline = time.monotonic() + 5
    while (m := recv_teldata(sub)).time.sec != T0_S + 15:
        assert time.monotonic() < deadline, "the new rows were never read: a stale snapshot?"
    assert (m.ra, m.dec) == (84.0, 22.5)
    status = running.status()
    assert status["source"] == f"mysql ssdaq@127.0.0.1:{database.port}/monitoring"
    assert status["counters"]["db_errors"] == 0 and status["health"] == "ok"


def test_poll_failures_are_counted_and_polling_recovers(
    database: MariaDB, credentials: Path, start_receiver, zmq_context
) -> None:
    clear(database)
    pub_port = free_port(socket.SOCK_STREAM)
    running = start_receiver(
        "teldata", mysql_config(pub_port, database), CREDENTIALS_DIRECTORY=str(credentials)
    )
    sub = subscribe(zmq_context, pub_port)
    running.wait_counter("no_data", 2)  # empty tables
    with database.root() as conn, conn.cursor() as c:
        c.execute("RENAME TABLE monitoring.TCU_ACTUAL_RA TO monitoring.moved")
        running.wait_counter("db_errors", 2)
        c.execute("RENAME TABLE monitoring.moved TO monitoring.TCU_ACTUAL_RA")
    point_at(database, T0_S * 10**9, 1.0, 2.0)
    assert (recv_teldata(sub).ra, running.status()["health"]) == (1.0, "ok")
    err = running.stop()
    assert "no_data: 1 since last report" in err and "TCU_ACTUAL_RA' doesn't exist" in err


@pytest.mark.parametrize(
    "extra, counter, says",
    [
        ('query = "SELECT 1, 2"\n', "bad_row", "must return time, ra, dec; got 2 columns"),
        ("query = \"SELECT 1, 'north', 3\"\n", "bad_row", "could not convert string to float"),
        ('user = "nobody"\n', "db_errors", "Access denied for user 'nobody'"),
    ],
)
def test_a_query_or_login_that_cannot_give_a_pointing_is_counted(
    database: MariaDB,
    credentials: Path,
    start_receiver,
    zmq_context,
    extra: str,
    counter: str,
    says: str,
) -> None:
    pub_port = free_port(socket.SOCK_STREAM)
    running = start_receiver(
        "teldata", mysql_config(pub_port, database, extra), CREDENTIALS_DIRECTORY=str(credentials)
    )
    sub = subscribe(zmq_context, pub_port)
    running.wait_counter(counter, 2)
    assert nothing_more(sub, 0.1)
    assert says in running.stop()


def test_a_slow_query_times_out_without_stalling_the_receiver(
    database: MariaDB, credentials: Path, start_receiver
) -> None:
    running = start_receiver(
        "teldata",
        mysql_config(
            free_port(socket.SOCK_STREAM),
            database,
            'query = "SELECT SLEEP(3), 1, 2"\n',
            timeout_s=0.5,
        ),
        CREDENTIALS_DIRECTORY=str(credentials),
    )
    running.wait_counter("timeouts", 1)
    t0 = time.monotonic()
    assert running.command("ping") == "pong"
    assert time.monotonic() - t0 < 1.5, "the event loop waited for the 3 s query"
    assert running.status()["health"] == "ok"


def test_a_missing_credential_is_one_error_line_then_idle_until_a_reload_finds_it(
    database: MariaDB, tmp_path: Path, start_receiver, zmq_context, notify
) -> None:
    clear(database)
    point_at(database, T0_S * 10**9, 5.0, 6.0)
    empty = tmp_path / "no-credentials"
    empty.mkdir()
    pub_port = free_port(socket.SOCK_STREAM)
    running = start_receiver(
        "teldata", mysql_config(pub_port, database), CREDENTIALS_DIRECTORY=str(empty)
    )
    sub = subscribe(zmq_context, pub_port)
    status = running.status()
    assert status["health"] == "ok" and status["source"] is None
    assert status["status_line"].startswith(
        "idle: no credential 'teldata-db-password': cannot read"
    )
    assert notify.wait_for("STATUS")["STATUS"].startswith("idle: no credential")
    assert nothing_more(sub, 0.6)

    (empty / "teldata-db-password").write_text(PASSWORD)
    assert running.command("reload") == "reloaded"
    assert recv_teldata(sub).ra == 5.0
    err = running.stop()
    assert err.count("no credential") == 1, err
