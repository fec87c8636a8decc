"""Every receiver's and writer's state in one place, for ``ssdaqctl status`` and ``ssdaq-dash``.

Two sources, merged per name: the unit's state from systemd (``systemctl show``) when systemd runs
this host with ssdaq's units installed, and the receiver's own ``status`` reply on its command
socket (rates, counters, health, absent modules). Without them only the second exists; a receiver
that does not answer is then "not running". The known names are the packaged receivers and
writers of the stream registry, the site receivers systemd has loaded, and every command socket
found in the runtime directory.
"""

import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssdaq import streams
from ssdaq.core.commands import NoAnswer, request, socket_path

#: the packaged receivers, in data-flow order (each has ssdaq-NAME.service)
RECEIVERS = tuple(s.name for s in streams.STREAMS if s.has_unit)
#: receivers with a listening socket unit (stopping one without its socket would not stick)
SOCKET_UNITS = tuple(s.name for s in streams.STREAMS if s.socket_unit)
WRITER_PREFIX = streams.WRITER_PREFIX
TARGET = "ssdaq.target"
#: unit states in which the daemon runs or is about to
ACTIVE = ("active", "reloading", "activating")
UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "MainPID", "StatusText",
                   "NRestarts", "Result")


def systemd_running() -> bool:
    """True when systemd is PID 1 here (``sd_booted()``: /run/systemd/system exists)."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def units_installed() -> bool:
    """True when ssdaq's units are installed (``ssdaq.target`` in one of systemd's unit directories)."""
    return any(os.path.exists(os.path.join(d, TARGET)) for d in (*UNIT_PATHS, "/lib/systemd/system"))


def managed_by_systemd() -> bool:
    """Whether unit states mean anything here: systemd is PID 1 and ssdaq's units are installed.

    A workstation that runs the demo or the tests from a checkout has systemd but no ssdaq units:
    its receivers were started by hand, and systemd would call every one of them "not found"."""
    return systemd_running() and units_installed()


def socket_of(name: str) -> str | None:
    """The .socket unit that starts ``name``'s service, if it can have one (writers cannot)."""
    return None if name.startswith(WRITER_PREFIX) else unit_of(name).replace(".service", ".socket")


def unit_of(name: str) -> str:
    """The service unit running ``name``: built-in, writer (writer-STREAM) or site receiver."""
    if name in RECEIVERS:
        return f"ssdaq-{name}.service"
    if name.startswith(WRITER_PREFIX):
        return f"ssdaq-writer@{name[len(WRITER_PREFIX):]}.service"
    return f"ssdaq-receiver@{name}.service"


#: where systemd looks for drop-ins of system units, highest precedence first
UNIT_PATHS = ("/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
              "/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
              "/usr/lib/systemd/system")


def dropins(name: str) -> str:
    """The systemd drop-ins of ``name``'s service and socket units, each headed by its path
    (``""`` when systemd does not run here): what ``systemctl cat`` adds to the unit files."""
    if not managed_by_systemd():
        return ""
    service = unit_of(name)
    texts = []
    for unit in (service, service.replace(".service", ".socket")):
        stem, _, kind = unit.rpartition(".")
        # the unit itself, its template, then every prefix up to a dash (ssdaq-.service.d)
        names = [unit, f"{stem.partition('@')[0]}@.{kind}" if "@" in stem else None]
        names += [f"{stem[:i + 1]}.{kind}" for i in reversed(range(len(stem))) if stem[i] == "-"]
        names.append(kind)
        for directory in UNIT_PATHS:
            for n in filter(None, names):
                for path in sorted(Path(directory, f"{n}.d").glob("*.conf")):
                    try:
                        texts.append(f"# {path}\n{path.read_text()}")
                    except OSError as e:
                        texts.append(f"# {path}: {e}\n")
    return "\n".join(texts)


def name_of(unit: str) -> str | None:
    """The receiver or writer name of an ssdaq service unit (None for other units)."""
    if not unit.endswith(".service") or not unit.startswith("ssdaq-"):
        return None
    stem = unit[len("ssdaq-"):-len(".service")]
    kind, at, instance = stem.partition("@")
    if not at:
        return stem
    return {"writer": WRITER_PREFIX + instance, "receiver": instance}.get(kind)


@dataclass
class ReceiverState:
    """What is known about one receiver or writer."""

    name: str
    unit: str
    #: systemd's properties of the unit (empty without systemd)
    systemd: dict[str, str]
    #: the ``status`` command's result, or None
    reply: dict[str, Any] | None = None
    #: why a receiver with a command socket did not answer
    error: str | None = None
    #: systemd's properties of its .socket unit (empty without systemd or without a socket unit)
    socket: dict[str, str] = field(default_factory=dict)

    @property
    def unit_state(self) -> str | None:
        """"active (running)", "failed (exit-code)" …; None without systemd."""
        if not self.systemd:
            return None
        if self.systemd.get("LoadState") not in ("loaded", None):
            return self.systemd["LoadState"]
        state = f"{self.systemd.get('ActiveState', '?')} ({self.systemd.get('SubState', '?')})"
        return state

    @property
    def running(self) -> bool:
        if self.systemd:
            return self.systemd.get("ActiveState") in ACTIVE
        return self.reply is not None or self.error is not None  # its socket exists

    @property
    def activity(self) -> str:
        """active (running, or should be: its command socket exists), idle (its socket listens
        and no first datagram has started the service yet: a camera that is off is not a
        fault), failed, or inactive."""
        if self.systemd.get("ActiveState") == "failed":
            return "failed"
        if self.running:
            return "active"
        if self.socket.get("ActiveState") == "active":
            return "idle"
        return "inactive"

    @property
    def health(self) -> str:
        if self.reply is not None:
            return str(self.reply.get("health", "?"))
        if self.systemd.get("ActiveState") == "failed":
            return "failed"
        return "no answer" if self.running else "not running"

    @property
    def healthy(self) -> bool:
        return self.health == "ok"

    def rate(self, counter: str) -> float | None:
        return None if self.reply is None else self.reply.get("rates", {}).get(counter)

    @property
    def status_line(self) -> str:
        if self.reply is not None:
            return str(self.reply.get("status_line", ""))
        return self.systemd.get("StatusText", "") or (self.error or "")

    @property
    def absent_modules(self) -> list[int]:
        return list((self.reply or {}).get("absent_modules", []))

    @property
    def last_data_s_ago(self) -> float | None:
        """Seconds since input last arrived, when the receiver reports it."""
        reply = self.reply or {}
        if reply.get("last_input_s_ago") is not None:
            return float(reply["last_input_s_ago"])
        seen = [m.get("last_seen_s_ago") for m in reply.get("modules", {}).values()]
        seen = [s for s in seen if s is not None]
        return min(seen) if seen else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "unit_state": self.unit_state,
                "running": self.running, "health": self.health, "status_line": self.status_line,
                "absent_modules": self.absent_modules, "last_data_s_ago": self.last_data_s_ago,
                "activity": self.activity, "systemd": self.systemd or None,
                "socket": self.socket or None, "status": self.reply, "error": self.error}


def as_json(states: list[ReceiverState], with_systemd: bool) -> dict[str, Any]:
    """``ssdaqctl status --json`` (and ssdaq-web's ``/api/status``)."""
    return {"systemd": with_systemd, "receivers": [s.to_json() for s in states]}


def systemd_show(units: list[str]) -> dict[str, dict[str, str]]:
    """``systemctl show`` of ``units`` in one call: unit -> properties."""
    if not units:
        return {}
    done = _systemctl("show", "--no-pager", "-p", ",".join(UNIT_PROPERTIES), *units)
    out: dict[str, dict[str, str]] = {}
    for block in done.stdout.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            out[props["Id"]] = props
    return out


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    """``systemctl ARGS``; without our ``NOTIFY_SOCKET``, which is the caller's service's, not its."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=10,
                          check=False, env=env)


def systemd_names() -> list[str]:
    """Names of the ssdaq services systemd has loaded (site receivers and writers included)."""
    done = _systemctl("list-units", "--all", "--plain", "--no-legend", "--no-pager",
                      "ssdaq-*.service")
    names = (name_of(line.split()[0]) for line in done.stdout.splitlines() if line.strip())
    return [n for n in names if n]


def socket_names() -> list[str]:
    """Names of the command sockets in the runtime directory (running receivers and writers)."""
    directory = Path(socket_path("x")).parent
    return sorted(p.name[: -len(".ctl")] for p in directory.glob("*.ctl"))


def known_names(with_systemd: bool) -> list[str]:
    found = list(streams.daemon_names())
    for name in (systemd_names() if with_systemd else []) + socket_names():
        if name not in found:
            found.append(name)
    return found


#: how a command reaches a receiver: (socket path, command line, timeout) -> decoded reply
Send = Callable[[str, str, float], dict[str, Any]]


def query(name: str, timeout_s: float, send: Send = request) -> tuple[dict[str, Any] | None, str | None]:
    """``status`` of receiver ``name``: (reply, None), (None, why not), or (None, None) when it
    has no command socket (it is not running)."""
    if not os.path.exists(socket_path(name)):
        return None, None
    try:
        reply = send(socket_path(name), "status", timeout_s)
    except NoAnswer as e:
        return None, str(e)
    if not reply.get("ok"):
        return None, str(reply.get("error"))
    return reply["result"], None


def gather(names: list[str] | None = None, timeout_s: float = 1.0,
           use_systemd: bool | None = None, send: Send = request) -> list[ReceiverState]:
    """The state of ``names`` (default: every known name), querying them in parallel.

    ``use_systemd`` None: ask systemd when it manages ssdaq here (:func:`managed_by_systemd`;
    False for receivers started by hand, as in the demo, whose units mean nothing). ``send``
    carries the ``status`` command (ssdaq-web passes one that refuses every other command).
    """
    with_systemd = managed_by_systemd() if use_systemd is None else use_systemd
    names = names or known_names(with_systemd)
    units = {name: unit_of(name) for name in names}
    sockets = {name: socket_of(name) for name in names}
    shown = systemd_show([*units.values(), *filter(None, sockets.values())]) if with_systemd else {}
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        answers = list(pool.map(lambda n: query(n, timeout_s, send), names))
    return [ReceiverState(name, units[name], shown.get(units[name], {}), reply, error,
                          _loaded(shown.get(sockets[name] or "", {})))
            for name, (reply, error) in zip(names, answers, strict=True)]


def _loaded(props: dict[str, str]) -> dict[str, str]:
    """``props`` of a unit that exists (``systemctl show`` answers for any name: not-found)."""
    return props if props.get("LoadState") == "loaded" else {}
