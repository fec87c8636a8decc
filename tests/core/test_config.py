"""ssdaq.core.config: declared settings load strictly, render as TOML, and shipped files match."""

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from ssdaq.core import config
from ssdaq.core.errors import ConfigError
from ssdaq.core.main import import_class, registered
from ssdaq.core.settings import PublisherSettings
from ssdaq.receivers.writer_config import CONFIGS as WRITER_CONFIGS
from ssdaq.web.config import WebConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Inner:
    """An inner table."""

    window_ns: int = config.setting(10, help="a window", min=1)
    name: str = config.setting("a", help="a name", choices=("a", "b"))


@dataclass(frozen=True)
class Outer:
    """The top."""

    rate_s: float = config.setting(1.5, help="a rate", min=0.0, max=10.0)
    flag: bool = config.setting(False, help="a flag")
    inner: Inner = config.table(Inner)
    pubs: tuple[PublisherSettings, ...] = config.tables(PublisherSettings(port=9), help="pubs")
    modules: dict[str, int] = config.setting(default_factory=dict, help="map", min=0, max=31)


@dataclass(frozen=True)
class Restarting(Outer):
    """Settings a reload takes in but applies only at the next start."""

    restart_only: ClassVar[tuple[str, ...]] = ("rate_s", "inner", "pubs")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.toml"
    p.write_text(text)
    return p


def test_missing_keys_take_the_defaults(tmp_path: Path) -> None:
    assert config.load(Outer, write(tmp_path, "")) == Outer()


def test_values_are_read_into_nested_tables(tmp_path: Path) -> None:
    cfg = config.load(Outer, write(tmp_path, """
rate_s = 2
[inner]
window_ns = 5
[[pubs]]
port = 1234
mode = "remote"
[modules]
"10.0.0.7" = 3
"""))
    assert cfg.rate_s == 2.0 and isinstance(cfg.rate_s, float)
    assert cfg.inner == Inner(window_ns=5)
    assert cfg.pubs == (PublisherSettings(port=1234, mode="remote"),)
    assert cfg.modules == {"10.0.0.7": 3}


@pytest.mark.parametrize("text, key, fragment", [
    ("bogus = 1", "bogus", "unknown setting"),
    ("[inner]\nwindow_nss = 1", "inner.window_nss", "unknown setting"),
    ("[inner]\nwindow_ns = 'abc'", "inner.window_ns", "expected integer >= 1, got 'abc'"),
    ("[inner]\nwindow_ns = 0", "inner.window_ns", "expected integer >= 1, got 0"),
    ("rate_s = 11", "rate_s", "in [0.0, 10.0]"),
    ("flag = 1", "flag", "expected true or false"),
    ("[inner]\nname = 'c'", "inner.name", "expected one of a, b"),
    ("[[pubs]]\nmode = 'sideways'", "pubs[0].mode", "expected one of local, outbound, remote"),
    ("[modules]\nx = 40", "modules.x", "in [0, 31]"),
    ("inner = 3", "inner", "expected a table"),
    ("rate_s = nan", "rate_s", "nan"),
])
def test_bad_values_name_the_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(Outer, path)
    assert e.value.file == str(path) and e.value.key == key
    assert str(e.value).startswith(f"{path}: {key}: ") and fragment in str(e.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(Outer, write(tmp_path, "x = = 1"))


def test_rendered_defaults_load_back_equal(tmp_path: Path) -> None:
    text = config.render(Outer(), "header line")
    assert text.startswith("# header line\n")
    assert "# a window (range: 1..)\nwindow_ns = 10" in text
    assert config.load(Outer, write(tmp_path, text)) == Outer()


def test_rendered_non_defaults_load_back_equal(tmp_path: Path) -> None:
    cfg = Outer(rate_s=0.25, flag=True, pubs=(PublisherSettings(port=1), PublisherSettings(kind="raw", path="/x")),
                modules={"127.0.0.1": 4})
    assert config.load(Outer, write(tmp_path, config.render(cfg))) == cfg


def uncommented(text: str) -> str:
    """A shipped override file with every setting line (``#key = …``, ``#[table]``) made active."""
    return re.sub(r"^#(?=[^\s#])", "", text, flags=re.MULTILINE)


def test_commented_render_lists_every_setting_inactive(tmp_path: Path) -> None:
    text = config.render(Outer(rate_s=2.0), "header line", commented=True)
    assert "# a window (range: 1..)\n#window_ns = 10\n" in text and "\n#[inner]\n" in text
    assert config.load(Outer, write(tmp_path, text)) == Outer()
    assert config.load(Outer, write(tmp_path, uncommented(text))) == Outer(rate_s=2.0)


def test_settings_a_reload_does_not_apply_say_restart_to_apply() -> None:
    text = config.render(Restarting())
    assert "# a rate (range: 0.0..10.0; restart to apply)\nrate_s = 1.5\n" in text
    assert "# a flag\nflag = false\n" in text
    assert "# An inner table. (restart to apply)\n[inner]\n" in text
    assert "# a window (range: 1..)\nwindow_ns = 10\n" in text  # the table's header says it
    assert "# pubs (restart to apply)\n[[pubs]]\n" in text


def test_a_long_help_line_puts_its_note_on_a_line_of_its_own() -> None:
    long = "x" * (config.COMMENT_WIDTH - 5)
    field = dataclasses.field(metadata={"help": f"first\n{long}", "min": 0})
    assert config._comment(field) == ["# first", f"# {long}", "# (range: 0..)"]


SHIPPED = [
    *((f"{name}.toml", import_class(spec).config_class) for name, spec in sorted(registered().items())),
    *((f"writer-{stream}.toml", cls) for stream, cls in sorted(WRITER_CONFIGS.items())),
    ("web.toml", WebConfig),
]


@pytest.mark.parametrize(("name", "cls"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_shipped_override_file_is_the_code_defaults_commented_out(name: str, cls: type) -> None:
    """etc/ssdaq/<name>: every setting, inactive; made active, each line equals the default."""
    path = ROOT / "etc" / "ssdaq" / name
    text = path.read_text()
    assert text.endswith(config.render(cls(), "", commented=True)), (
        f"{path} drifted from the code: run `make configs`")
    assert config.load(cls, path) == cls()
    assert config.build(cls, tomllib.loads(uncommented(text)), f"{path} uncommented") == cls()


@pytest.mark.parametrize(("name", "cls"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_restart_only_names_settings_that_exist(name: str, cls: type) -> None:
    """A misspelt entry would let a reload report "reloaded" for a change it never applies."""
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(getattr(cls, "restart_only", ())) <= fields | {"sockets"}, name


def test_every_shipped_file_is_a_declared_one() -> None:
    assert sorted(p.name for p in (ROOT / "etc" / "ssdaq").iterdir()) == sorted(n for n, _ in SHIPPED)
