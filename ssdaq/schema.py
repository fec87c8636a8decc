"""How a setting is declared: a dataclass field whose metadata holds its help and valid range.

The declaration helpers live here, apart from :mod:`ssdaq.core.config` (which loads, validates
and renders what is declared), so that :mod:`ssdaq.data`, which imports nothing from core, can
declare the settings of its pure parts where they are used (the ``[assembler]`` table).
"""

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Any = dataclasses.MISSING,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare one setting: its default, the comment rendered above it, and its valid range.

    Units belong in the name (``…_ns``, ``…_s``, ``…_bytes``) so they show in the TOML too.
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def table(cls: type[T], help: str = "", **overrides: Any) -> Any:
    """Declare a nested table whose defaults are ``cls(**overrides)``."""
    return setting(default_factory=lambda: cls(**overrides), help=help or first_line(cls))


def tables(*items: Any, help: str) -> Any:
    """Declare an array of tables defaulting to ``items``."""
    return setting(default_factory=lambda: tuple(items), help=help)


def first_line(cls: type) -> str:
    """The first line of ``cls``'s docstring: a table's comment unless declared otherwise."""
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
