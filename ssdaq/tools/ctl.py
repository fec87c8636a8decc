"""``ssdaqctl``: talk to a running receiver over its command socket.

``ssdaqctl NAME COMMAND [ARGS…]`` prints the reply as one JSON document. Exit status: 0 the
receiver answered ok, 1 it refused the command, 2 nothing answered within the timeout (the
message names the socket tried), 64 usage error.
"""

import argparse
import json
import sys

from ssdaq.core.commands import NoAnswer, request, socket_path
from ssdaq.core.errors import EX_USAGE
from ssdaq.core.main import RESERVED_NAMES, registered

EXIT_REFUSED = 1
EXIT_NO_ANSWER = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssdaqctl",
        description="Send a command to a running ssdaq receiver and print its JSON reply. "
        "`ssdaqctl NAME help` lists a receiver's commands.",
        epilog="Exit status: 0 ok, 1 refused by the receiver, 2 no answer, 64 usage error. "
        "The socket is $RUNTIME_DIRECTORY/NAME.ctl, else /run/ssdaq/NAME.ctl.",
    )
    p.add_argument("name", help="receiver name (e.g. readout), or `list`")
    p.add_argument("command", nargs="?", help="command, e.g. ping, help, status, reload")
    p.add_argument("args", nargs="*", help="command arguments")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the reply (2)")
    p.add_argument("--socket", help="command socket path (overrides the default location)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return EX_USAGE if e.code else 0
    if args.name == "list":
        print(json.dumps(sorted(registered())))
        return 0
    if args.name in RESERVED_NAMES:
        print(f"ssdaqctl: `{args.name}` is not available in this version", file=sys.stderr)
        return EX_USAGE
    if not args.command:
        p.print_usage(sys.stderr)
        return EX_USAGE
    path = args.socket or socket_path(args.name)
    try:
        reply = request(path, " ".join([args.command, *args.args]), args.timeout)
    except NoAnswer as e:
        print(f"ssdaqctl: {e}", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
