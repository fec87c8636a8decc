"""Declared settings: one frozen dataclass per TOML table, validated on load, rendered as TOML.

A receiver declares its settings once, with :func:`setting` (defined in :mod:`ssdaq.schema`);
from that declaration come the defaults, :func:`load` (which rejects unknown keys, wrong types
and out-of-range values with a :class:`ConfigError` naming file and ``table.key``, and fills every
key a file leaves out from the defaults) and :func:`render` (``--print-config``, and the override
files shipped in ``etc/ssdaq/``, where every setting is commented out). TOML is data: nothing in
it is evaluated.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``tuple[str, ...]``, a nested
settings dataclass (a TOML table), ``tuple[<dataclass>, ...]`` (an array of tables) and
``dict[str, int]`` (a free table, e.g. address -> module slot).
"""

import dataclasses
import json
import math
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ssdaq.core.errors import ConfigError

# declared in ssdaq.schema so that ssdaq.data, which imports nothing from core, can use them
from ssdaq.schema import setting as setting
from ssdaq.schema import table as table
from ssdaq.schema import tables as tables

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_settings(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"array of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table of integers"
    if _is_settings(tp):
        return "table"
    return {bool: "true or false", int: "integer", float: "number", str: "string"}[tp]


def read(path: str | Path) -> dict[str, Any]:
    """The TOML document at ``path``; unreadable or invalid files are a ``ConfigError``."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(name, "", "no such file") from None
    except PermissionError:
        raise ConfigError(name, "", "permission denied") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(name, "", f"not valid TOML: {e}") from None


def load(cls: type[T], path: str | Path, ignore: tuple[str, ...] = ()) -> T:
    """Read ``path`` and build ``cls`` from it; a missing file is an error (the caller decides).

    Top-level keys in ``ignore`` are left out (read by someone else, e.g. ``receiver_class``).
    """
    data = read(path)
    return build(cls, {k: v for k, v in data.items() if k not in ignore}, str(path))


def build(cls: type[T], data: Mapping[str, Any], file: str = "<defaults>", prefix: str = "") -> T:
    """Validate a parsed TOML mapping against ``cls``; see the module docstring for the rules."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, where, f"unknown setting (known here: {known})")
        values[key] = _convert(hints[key], fields[key], raw, file, where)
    return cls(**values)


def _convert(tp: Any, f: dataclasses.Field[Any], raw: Any, file: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if _is_settings(tp):
        if not isinstance(raw, dict):
            raise ConfigError(file, where, f"expected a table, got {raw!r}")
        return build(tp, raw, file, where + ".")
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(raw, list):
            raise ConfigError(file, where, f"expected {_type_name(tp)}, got {raw!r}")
        if _is_settings(item):
            out = []
            for i, entry in enumerate(raw):
                if not isinstance(entry, dict):
                    raise ConfigError(file, f"{where}[{i}]", f"expected a table, got {entry!r}")
                out.append(build(item, entry, file, f"{where}[{i}]."))
            return tuple(out)
        return tuple(_scalar(item, f, v, file, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        if not isinstance(raw, dict):
            raise ConfigError(file, where, f"expected {_type_name(tp)}, got {raw!r}")
        val_type = typing.get_args(tp)[1]
        return {str(k): _scalar(val_type, f, v, file, f"{where}.{k}") for k, v in raw.items()}
    return _scalar(tp, f, raw, file, where)


def _expected(tp: Any, meta: Mapping[str, Any]) -> str:
    """What a value must be, in words: "integer >= 1", "one of a, b", …"""
    if meta.get("choices"):
        return f"one of {', '.join(meta['choices'])}"
    lo, hi = meta.get("min"), meta.get("max")
    rng = "" if lo is None and hi is None else (
        f" >= {lo}" if hi is None else f" <= {hi}" if lo is None else f" in [{lo}, {hi}]")
    return _type_name(tp) + rng


def _scalar(tp: Any, f: dataclasses.Field[Any], raw: Any, file: str, where: str) -> Any:
    meta = f.metadata
    if tp is bool:
        ok = isinstance(raw, bool)
    elif tp in (int, str):
        ok = isinstance(raw, tp) and not isinstance(raw, bool)
    else:
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and not math.isnan(raw)
    value = float(raw) if ok and tp is float else raw
    lo, hi = meta.get("min"), meta.get("max")
    if ok and meta.get("choices"):
        ok = value in meta["choices"]
    if ok and tp in (int, float):
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        raise ConfigError(file, where, f"expected {_expected(tp, meta)}, got {raw!r}")
    return value


def to_dict(obj: Any) -> Any:
    """A settings object as plain data (for ``status`` and ``--print-config --json``)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


# ---------------------------------------------------------------------------------------------
# Rendering


#: The note under the first line of every shipped file in etc/ssdaq/ (``write_default_configs``)
OVERRIDES_NOTE = """\
Every setting is listed at its default, commented out: the defaults come from the code, so
this file holds only what the site changes. Uncomment a line (and its [table] line) and
change it; `--print-config` prints the merged result. Installation creates this file once
and upgrades never touch it: /usr/share/ssdaq/config/ has the list of the installed version.
Generated from the declared settings by `make configs`."""


def write_overrides(directory: Path, name: str, config: Any, about: str) -> None:
    """Write ``directory/name.toml``, the site override file of the program ``about`` names:
    every setting of ``config`` commented out at its default, under the header saying how to
    use it."""
    directory.mkdir(parents=True, exist_ok=True)
    header = f"/etc/ssdaq/{name}.toml: settings of {about}.\n{OVERRIDES_NOTE}"
    (directory / f"{name}.toml").write_text(render(config, header, commented=True))


def render(obj: Any, header: str = "", *, commented: bool = False) -> str:
    """The settings object as TOML with each setting's help above it.

    ``commented``: every setting and table line is commented out as ``#key = value`` (help lines
    are ``# text``), so that removing the ``#`` of a setting line makes it active.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()] + [""]
    for line in _render_table(obj, ""):
        lines.append("#" + line if commented and line and not line.startswith("#") else line)
    return "\n".join(lines).strip("\n") + "\n"


#: how long a help line may get before its (range; …) note goes on a line of its own
COMMENT_WIDTH = 96


def _comment(f: dataclasses.Field[Any], restart: bool = False) -> list[str]:
    meta = f.metadata
    text = meta.get("help", "")
    extra = []
    if meta.get("choices"):
        extra.append("one of: " + ", ".join(meta["choices"]))
    if meta.get("min") is not None or meta.get("max") is not None:
        lo, hi = meta.get("min"), meta.get("max")
        extra.append(f"range: {'' if lo is None else lo}..{'' if hi is None else hi}")
    if restart:
        extra.append("restart to apply")
    if extra:
        note = f"({'; '.join(extra)})"
        last = text.splitlines()[-1] if text else ""
        text = f"{text}\n{note}" if text and len(last) + len(note) > COMMENT_WIDTH else f"{text} {note}"
    return [f"# {line}".rstrip() for line in text.strip().splitlines()]


def _render_table(obj: Any, path: str, restart_tables: bool = False) -> list[str]:
    """``obj``'s lines; a setting in its class's ``restart_only`` (a reload does not apply it)
    says "restart to apply", and so do the headers of the tables inside a table that is."""
    hints = _hints(type(obj))
    restart_only = getattr(type(obj), "restart_only", ())
    scalars: list[str] = []
    subs: list[str] = []
    for f in dataclasses.fields(obj):
        tp, value = hints[f.name], getattr(obj, f.name)
        key = f"{path}{_key(f.name)}"
        origin = typing.get_origin(tp)
        restart = f.name in restart_only
        header = _comment(f, restart or restart_tables)
        if _is_settings(tp):
            inner = _render_table(value, key + ".", restart)
            # a table holding only tables needs no header of its own
            subs += inner if inner and inner[0] == "" else ["", *header, f"[{key}]", *inner]
        elif origin is dict:
            subs += ["", *header, f"[{key}]"]
            subs += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
        elif origin is tuple and _is_settings(typing.get_args(tp)[0]):
            if not value:
                scalars += [*_comment(f, restart), f"{_key(f.name)} = []"]
            for i, entry in enumerate(value):
                subs += ["", *(header if i == 0 else []), f"[[{key}]]"]
                subs += _render_table(entry, key + ".")
        else:
            scalars += [*_comment(f, restart), f"{_key(f.name)} = {_value(value)}"]
    return scalars + subs


def _key(name: str) -> str:
    bare = name.replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)

