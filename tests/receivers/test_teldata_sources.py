"""teldata_sources: database rows to pointings, and the password from systemd's credentials."""

from decimal import Decimal
from pathlib import Path

import pytest

from ssdaq.receivers.teldata_sources import (
    Pointing,
    SourceError,
    StaticSettings,
    StaticSource,
    pointing_from_row,
    read_credential,
    unix_ns,
)


def test_astri_timetags_count_100_ns_since_the_gregorian_calendar() -> None:
    assert unix_ns(122_192_928_000_000_000, "gregorian_100ns") == 0  # 1970-01-01
    assert unix_ns(0, "gregorian_100ns") == -12_219_292_800 * 10**9  # 1582-10-15
    assert unix_ns(139_192_928_001_234_567, "gregorian_100ns") == 1_700_000_000_123_456_700


def test_unix_seconds_keep_their_fraction_exactly() -> None:
    assert unix_ns(Decimal("1700000000.123456789"), "unix_s") == 1_700_000_000_123_456_789
    assert unix_ns(1_700_000_000, "unix_s") == 1_700_000_000 * 10**9


def test_a_row_becomes_a_pointing() -> None:
    row = (122_192_928_000_000_000, Decimal("83.633"), -5)
    assert pointing_from_row(row, "gregorian_100ns") == Pointing(0, 83.633, -5.0)


@pytest.mark.parametrize(
    "row, reason",
    [
        (None, "no_data"),
        ((1, 2), "bad_row"),
        ((1, "north", 3), "bad_row"),
        ((None, 1, 2), "bad_row"),
        ((1, float("nan"), 2), "bad_row"),
        (("x", 1, 2), "bad_row"),
    ],
)
def test_rows_that_give_no_pointing_say_why(row: tuple | None, reason: str) -> None:
    with pytest.raises(SourceError) as err:
        pointing_from_row(row, "unix_s")
    assert err.value.reason == reason


def test_the_static_source_stamps_its_pointing_now() -> None:
    point = StaticSource(StaticSettings(ra_deg=1.5, dec_deg=-2.5)).read()
    assert (point.ra, point.dec) == (1.5, -2.5) and point.time_ns > 1_700_000_000 * 10**9


def test_the_credential_is_read_without_its_final_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "db").write_text(" pass word \n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_credential("db") == " pass word "
    with pytest.raises(SourceError, match=r"no credential 'other': cannot read .*/other"):
        read_credential("other")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(SourceError, match=r"CREDENTIALS_DIRECTORY is not set .*LoadCredential=db:"):
        read_credential("db")
