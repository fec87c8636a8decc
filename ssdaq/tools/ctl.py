"""``ssdaqctl``: the DAQ at a glance, and commands to one receiver.

The verbs that act on the DAQ as a whole are declared in :mod:`ssdaq.verbs`; each has a handler
``verb_<name>`` here. Any other first word is a receiver or writer:

* ``ssdaqctl NAME COMMAND [ARGS…]`` sends a command over the receiver's socket and prints the JSON
  reply. Exit status: 0 the receiver answered ok, 1 it refused the command, 2 nothing answered
  within the timeout (the message names the socket tried), 64 usage error.
* ``ssdaqctl status [--json]``: one table of every receiver and writer: unit state (from systemd
  when it manages ssdaq here), health, rates, last data, absent modules, status line. Exit status 0
  when everything running is healthy, 1 otherwise.
* ``ssdaqctl start|stop|restart NAME|all`` wraps systemctl (exit 69 where systemd does not manage ssdaq).
* ``ssdaqctl list``: the registered receiver names, as JSON.
* ``ssdaqctl run start|stop|status``: observations (:mod:`ssdaq.tools.run`).
"""

import argparse
import json
import subprocess
import sys
from collections.abc import Callable

from ssdaq import daemons, streams, verbs
from ssdaq.core.cli import Parser
from ssdaq.core.commands import NoAnswer, request, socket_path
from ssdaq.core.errors import EX_UNAVAILABLE, EX_USAGE
from ssdaq.core.main import CONFIG_DIR, registered
from ssdaq.daemons import ReceiverState
from ssdaq.tools import run

EXIT_REFUSED = 1
EXIT_NO_ANSWER = 2
TIMEOUT_S = 2.0


def parser() -> Parser:
    verb_usage = " | ".join(" ".join(filter(None, (v.name, v.arguments))) for v in verbs.VERBS)
    verb_help = "; ".join(f"{v.name}: {v.help}" for v in verbs.VERBS)
    p = Parser(
        prog="ssdaqctl",
        description="Show the state of the ssdaq receivers and writers, start or stop them "
        "through systemd, or send a command to one and print its JSON reply. "
        "`ssdaqctl NAME help` lists a receiver's commands.",
        usage=f"ssdaqctl NAME COMMAND [ARGS...] | {verb_usage}",
        epilog=f"Verbs: {verb_help}. "
        "Exit status: 0 ok, 1 refused by the receiver (status: something unhealthy; "
        "start/stop: systemctl failed), 2 no answer, 64 usage error, 69 no ssdaq units under systemd here. "
        "The socket is NAME.ctl in $RUNTIME_DIRECTORY, else in /run/ssdaq if it exists, "
        "else in $XDG_RUNTIME_DIR/ssdaq.",
    )
    p.add_argument("name", help="receiver name (e.g. readout, writer-readout), or a verb: "
                                + ", ".join(verbs.NAMES))
    p.add_argument("command", nargs="?", help="command, e.g. ping, help, status, reload")
    p.add_argument("args", nargs="*", help="command arguments")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds to wait for a reply ({TIMEOUT_S:g}; run start|stop: "
                        f"{run.SYNC_TIMEOUT_S:g}, as a writer first closes its file)")
    p.add_argument("--socket", help="command socket path (overrides the default location)")
    p.add_argument("--json", action="store_true", help="status, run: print JSON instead of text")
    p.add_argument("--obs-id", type=run.obs_id, help="run start: the observation's id "
                   "(0..999999, never one used before; default: the next free one)")
    p.add_argument("--comment", help="run start: a comment stored in every file of the run")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.name in verbs.NAMES:
        handler: Callable[[argparse.Namespace], int] = globals()[f"verb_{args.name}"]
        return handler(args)
    if not args.command:
        p.print_usage(sys.stderr)
        return EX_USAGE
    path = args.socket or socket_path(args.name)
    try:
        reply = request(path, " ".join([args.command, *args.args]), args.timeout or TIMEOUT_S)
    except NoAnswer as e:
        print(f"ssdaqctl: {e}", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else EXIT_REFUSED


def verb_list(args: argparse.Namespace) -> int:
    print(json.dumps(sorted(registered())))
    return 0


def verb_status(args: argparse.Namespace) -> int:
    return status(args.json, args.timeout or TIMEOUT_S)


def _unit_verb(args: argparse.Namespace) -> int:
    if not args.command or args.args:
        print(f"usage: ssdaqctl {args.name} NAME|all", file=sys.stderr)
        return EX_USAGE
    return unit_action(args.name, args.command)


verb_start = verb_stop = verb_restart = _unit_verb
verb_run = run.main


# ---------------------------------------------------------------------------- status


def status(as_json: bool, timeout_s: float) -> int:
    states = daemons.gather(timeout_s=min(timeout_s, 2.0))
    if as_json:
        print(json.dumps(daemons.as_json(states, daemons.managed_by_systemd()), indent=2))
    else:
        print(table(states))
    trouble = [s for s in states if (s.running or s.health == "failed") and not s.healthy]
    return EXIT_REFUSED if trouble else 0


def _number(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def row(state: ReceiverState) -> list[str]:
    absent = state.absent_modules
    return [
        state.name,
        state.unit_state or ("running" if state.reply is not None else "-"),
        state.health,
        _number(state.rate("received")),
        _number(state.rate("published")),
        _number(state.last_data_s_ago, "{:.1f} s"),
        ",".join(map(str, absent)) if absent else "-",
        state.status_line,
    ]


HEADER = ["NAME", "STATE", "HEALTH", "IN/S", "OUT/S", "LAST DATA", "ABSENT", "STATUS"]


def table(states: list[ReceiverState]) -> str:
    """A plain-text table (no colour, no terminal needed: it also goes into mails and logs)."""
    rows = [HEADER] + [row(s) for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
             for r in rows]
    if not daemons.managed_by_systemd():
        lines.append("(systemd does not manage ssdaq here: states come from the command sockets only)")
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------- start/stop


def units_for(action: str, name: str) -> list[str]:
    """The systemctl arguments that ``action`` on ``name`` (or ``all``) means.

    A socket-activated receiver is stopped together with its socket, since the next datagram
    would start it again, and restarted without it: PID 1 keeps the socket open, so nothing sent
    meanwhile is lost. ``all`` is ``ssdaq.target``, whose stop also closes the sockets.
    """
    if name == "all":
        if action == "start":
            return [f"ssdaq-{n}.socket" for n in daemons.SOCKET_UNITS] + [daemons.TARGET]
        if action == "stop":
            return [daemons.TARGET]
        return [s.unit for s in daemons.gather(timeout_s=0.5) if s.running]
    service = daemons.unit_of(name)
    sockets = [service.replace(".service", ".socket")] if name in daemons.SOCKET_UNITS else []
    return {"start": sockets + [service], "stop": sockets + [service], "restart": [service]}[action]


def known(name: str) -> bool:
    return (name == "all" or name in streams.daemon_names()
            or (CONFIG_DIR / f"{name}.toml").exists())


def unit_action(action: str, name: str) -> int:
    if not daemons.managed_by_systemd():
        why = ("ssdaq's units are not installed (no ssdaq.target)" if daemons.systemd_running()
               else "systemd is not running on this host")
        print(f"ssdaqctl: {why}, so there is no unit to {action}; run a receiver in the "
              f"foreground with `ssdaq-receiver {name}`, or try `make demo`", file=sys.stderr)
        return EX_UNAVAILABLE
    if not known(name):
        print(f"ssdaqctl: unknown receiver {name!r}; known: all, {', '.join(streams.daemon_names())}, "
              "or a site receiver with /etc/ssdaq/NAME.toml",
              file=sys.stderr)
        return EX_USAGE
    units = units_for(action, name)
    if not units:
        print(f"ssdaqctl: nothing is running to {action}", file=sys.stderr)
        return 0
    done = subprocess.run(["systemctl", action, *units], capture_output=True, text=True,
                          timeout=120, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return EXIT_REFUSED
    print(f"{action}: {' '.join(units)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
