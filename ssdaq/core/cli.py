"""Command-line plumbing every ssdaq program shares: a usage error exits 64, options from settings.

argparse's own exit code 2 would read as "no answer" for ssdaqctl and "no data" for ssdaq-dump,
so every program's parser is :class:`Parser`. :func:`add_settings` turns a dataclass declared
with :func:`ssdaq.core.config.setting` into ``--long-options`` (help, type and range from the
declaration) and :func:`settings_from` builds the dataclass back from the parsed arguments, so an
option of a simulator is written once, as a setting, not again as an argument and a copy.
"""

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from ssdaq.core.errors import EX_USAGE

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors exit with EX_USAGE."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _scalar(tp: Any) -> type:
    """The scalar type of a setting's annotation (``float | None``: float; None is only ever a
    default, a value given on the command line is real)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        real: type = next(a for a in typing.get_args(tp) if a is not type(None))
        return real
    return typing.cast(type, tp)


def _converter(name: str, tp: type, low: float | None, high: float | None) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {_range(low, high)}, got {text!r}")
        return value
    convert.__name__ = name  # argparse names the converter in "invalid NAME value"
    return convert


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g}..{high:g}"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def add_settings(parser: argparse.ArgumentParser, cls: type,
                 defaults: Mapping[str, Any] | None = None) -> None:
    """One ``--name`` option per field of settings dataclass ``cls`` (``bool``: a flag).

    ``defaults`` overrides a field's default on the command line only (say, None for "now").
    """
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = defaults.get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        tp = _scalar(hints[f.name])
        help_text = meta["help"].replace("\n", " ").replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
            continue
        low, high = meta.get("min"), meta.get("max")
        shown = [] if default is None else [f"default {default}"]
        if low is not None or high is not None:
            shown.append(_range(low, high))
        parser.add_argument(flag, type=_converter(f.name, tp, low, high), default=default,
                            choices=meta.get("choices"),
                            help=help_text + (f" ({', '.join(shown)})" if shown else ""))


def settings_from(args: argparse.Namespace, cls: type[T], **overrides: Any) -> T:
    """The ``cls`` the options of :func:`add_settings` describe, with ``overrides`` applied."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**(values | overrides))
