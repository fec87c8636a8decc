"""The shared command-line plumbing: usage errors exit 64, options come from declared settings."""

from dataclasses import dataclass

import pytest

from ssdaq.core.cli import Parser, add_settings, settings_from
from ssdaq.core.config import setting


@dataclass(frozen=True)
class Example:
    """Settings a simulator might have."""

    rate_hz: float = setting(10.0, help="how often", min=0.5, max=100.0)
    count: int = setting(3, help="how many", min=1)
    start_at: float | None = setting(None, help="when, s")
    verbose: bool = setting(False, help="say more")
    mode: str = setting("a", help="which", choices=("a", "b"))


def parse(*argv: str) -> Example:
    p = Parser(prog="example")
    add_settings(p, Example, defaults={"count": 5})
    return settings_from(p.parse_args(argv), Example)


def test_options_follow_the_declaration() -> None:
    assert parse() == Example(count=5)
    assert parse("--rate-hz", "2.5", "--count", "7", "--start-at", "1", "--verbose", "--mode", "b") \
        == Example(rate_hz=2.5, count=7, start_at=1.0, verbose=True, mode="b")


@pytest.mark.parametrize("argv", [["--rate-hz", "0.1"], ["--rate-hz", "nan"], ["--count", "0"],
                                  ["--count", "x"], ["--mode", "c"], ["--no-such"]])
def test_a_bad_value_is_a_usage_error_naming_the_range(argv: list[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 64
    err = capsys.readouterr().err
    assert "example: error:" in err
    if argv[:2] == ["--rate-hz", "0.1"]:
        assert "expected 0.5..100" in err


def test_help_shows_each_settings_help_default_and_range() -> None:
    p = Parser(prog="example")
    add_settings(p, Example)
    text = " ".join(p.format_help().split())
    assert "--rate-hz RATE_HZ how often (default 10.0, 0.5..100)" in text
    assert "--count COUNT how many (default 3, >= 1)" in text
