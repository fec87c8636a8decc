"""``ssdaq-receiver``: run one receiver in the foreground (systemd's ExecStart, or by hand).

NAME is a built-in receiver of the stream registry (:mod:`ssdaq.streams`), or one a site
registered in the ``ssdaq.receivers`` entry-point group, or ``package.module:Class``, or the
name of a config file in /etc/ssdaq whose ``receiver_class`` names the class (what the
``ssdaq-receiver@NAME`` template units run). Startup failures are one log line and a sysexits code.
"""

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ssdaq import streams, verbs
from ssdaq.core import config as configlib
from ssdaq.core import heap, lifecycle, systemd
from ssdaq.core import logging as sslogging
from ssdaq.core.cli import Parser
from ssdaq.core.errors import EX_OK, EX_SOFTWARE, EX_USAGE, ConfigError, SsdaqError
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import ReceiverConfig

CONFIG_DIR = Path("/etc/ssdaq")
ENTRY_POINT_GROUP = "ssdaq.receivers"


def registered() -> dict[str, str]:
    """Receiver names -> "module:Class": the stream registry's, then a site's entry points."""
    builtin = {s.name: s.receiver for s in streams.STREAMS}
    return builtin | {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)
                      if ep.name not in builtin}


def import_class(spec: str, where: str = "") -> type[ReceiverServer[Any]]:
    """Import ``package.module:Class`` and check that it is a ReceiverServer."""
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(where or spec, "receiver_class" if where else "",
                          f"cannot import {spec!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, ReceiverServer)):
        raise ConfigError(where or spec, "receiver_class" if where else "",
                          f"{spec!r} is not a ReceiverServer subclass")
    return cls


def resolve(name: str, config_path: Path | None) -> tuple[str, type[ReceiverServer[Any]], Path]:
    """(service name, receiver class, config path) for the NAME given on the command line."""
    if ":" in name:
        cls = import_class(name)
        service = cls.service_name or cls.__name__.lower()
        return service, cls, config_path or CONFIG_DIR / f"{service}.toml"
    path = config_path or CONFIG_DIR / f"{name}.toml"
    known = registered()
    if name in known:
        return name, import_class(known[name]), path
    if not path.exists():
        raise ConfigError(str(path), "", f"{name!r} is not a registered receiver "
                          f"({', '.join(sorted(known))}) and has no config file naming its class")
    spec = configlib.read(path).get("receiver_class")
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(str(path), "receiver_class", "must name the receiver as package.module:Class")
    return name, import_class(spec, str(path)), path


def load_config(cls: type[ReceiverServer[Any]], path: Path,
                explicit: bool) -> tuple[ReceiverConfig, str | None]:
    """The receiver's configuration; the built-in defaults when the default file does not exist.

    ``receiver_class`` (which names the class) is accepted in any receiver's file.
    """
    if not path.exists() and not explicit:
        return cls.config_class(), None
    return configlib.load(cls.config_class, path, ignore=("receiver_class",)), str(path)


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="ssdaq-receiver",
        description="Run one ssdaq receiver in the foreground. Under systemd the sockets come from "
        "the .socket unit and readiness, status and the watchdog go through sd_notify.",
        epilog=f"Registered receivers: {', '.join(sorted(registered()))}. Configuration: "
        f"{CONFIG_DIR}/NAME.toml unless --config is given (built-in defaults if it does not exist).",
    )
    p.add_argument("name", nargs="?", help="receiver name, or package.module:Class")
    add_daemon_options(p, "registered receiver")
    return p


def add_daemon_options(p: argparse.ArgumentParser, what: str) -> None:
    """The options every ssdaq daemon shares (receivers and writers)."""
    p.add_argument("--config", type=Path, help="configuration file (TOML)")
    p.add_argument("--log-level", choices=sorted(sslogging.LEVELS), help="overrides [log] level")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML and exit")
    p.add_argument("--write-default-configs", metavar="DIR", type=Path,
                   help=f"write every {what}'s default configuration into DIR and exit")


def write_default_configs(directory: Path) -> None:
    for name, spec in sorted(registered().items()):
        configlib.write_overrides(directory, name, import_class(spec).config_class(),
                                  f"`ssdaq-receiver {name}` ({spec})")


def check_or_print(config: object, config_file: str | None, print_it: bool) -> int:
    """``--check-config`` (the file loaded: say so) or ``--print-config`` (the effective TOML)."""
    if print_it:
        sys.stdout.write(configlib.render(config))
    else:
        print(f"{config_file or 'built-in defaults'}: ok")
    return EX_OK


def startup_failed(prog: str, e: SsdaqError, log: logging.Logger, to_stderr: bool) -> int:
    """A daemon that cannot start says why in one line naming the file and key (or the address),
    to the journal with its SSDAQ_CONFIG_* fields, or to stderr for ``--check-config`` and
    ``--print-config``; ``STATUS=`` repeats it. Returns the error's sysexits code."""
    extra = {"SSDAQ_CONFIG_FILE": e.file, "SSDAQ_CONFIG_KEY": e.key} if isinstance(e, ConfigError) else {}
    if to_stderr:
        print(f"{prog}: {e}", file=sys.stderr)
    else:
        log.error("%s", e, extra=extra)
    systemd.notify(f"STATUS=failed: {e}")
    return e.exit_code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.write_default_configs:
        write_default_configs(args.write_default_configs)
        return EX_OK
    if not args.name:
        parser().print_usage(sys.stderr)
        return EX_USAGE
    if args.name in verbs.NAMES:
        print(f"ssdaq-receiver: {args.name!r} is reserved for ssdaqctl and cannot name a receiver",
              file=sys.stderr)
        return EX_USAGE
    log = sslogging.setup(args.name.rsplit(":", 1)[-1].lower(), args.log_level or "info")
    try:
        service, cls, path = resolve(args.name, args.config)
        config, config_file = load_config(cls, path, explicit=args.config is not None)
        if args.check_config or args.print_config:
            return check_or_print(config, config_file, args.print_config)
        log = sslogging.setup(service, args.log_level or config.log.level)
        sslogging.pin_level(args.log_level)
        if config_file is None:
            log.info("%s not found: using the built-in defaults", path)
        heap.keep_freed_memory()  # the process is a receiver's from here on
        return lifecycle.run_receiver(cls, config, service, config_file)
    except SsdaqError as e:
        return startup_failed("ssdaq-receiver", e, log, to_stderr=args.check_config or args.print_config)
    except Exception:
        logging.getLogger("ssdaq").exception("unexpected error")
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
