"""``ssdaqctl run start|stop|status``: observations, as the writers record them.

``start`` and ``stop`` change the run state (:mod:`ssdaq.runs`, the one owner every writer reads),
then tell every running writer to follow it now (``run_sync`` on its command socket) and print
what each opened. A writer that does not answer is named and the exit status is 2; the others
have switched all the same, and the one that did not answer follows the state file by itself
as soon as it reads it again (a few times a second, or at its next start). ``stop`` without an
open run, or an obs id already used, exit 1; a malformed obs id is a usage error (64).
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ssdaq import daemons, runs
from ssdaq.core.commands import NoAnswer, request, socket_path
from ssdaq.core.errors import EX_USAGE

EXIT_REFUSED = 1
EXIT_NO_ANSWER = 2
ACTIONS = ("start", "stop", "status")
#: a writer answers run_sync once it closed its file: fsync and checksum of up to max_file_bytes
SYNC_TIMEOUT_S = 30.0


def obs_id(text: str) -> int:
    """``--obs-id``: an integer 0..999999 (argparse turns the ValueError into a usage error)."""
    value = int(text)  # ValueError: not a number
    if not 0 <= value <= runs.MAX_OBS_ID:
        raise ValueError(text)
    return value


obs_id.__name__ = "obs id (0..999999)"  # what argparse names in "invalid ... value"


def writer_names() -> list[str]:
    """Every writer known here: packaged ones, loaded units and command sockets."""
    names = daemons.known_names(daemons.managed_by_systemd())
    return [n for n in names if n.startswith(daemons.WRITER_PREFIX)]


def sync_writers(timeout_s: float) -> dict[str, dict[str, Any]]:
    """``run_sync`` to every writer with a command socket, in parallel: name -> its result or
    its error. A writer whose unit is starting has no socket yet: it reads the state when up."""
    names = writer_names()
    units = (daemons.systemd_show([daemons.unit_of(n) for n in names])
             if daemons.managed_by_systemd() else {})
    out: dict[str, dict[str, Any]] = {}
    asked = []
    for name in names:
        if os.path.exists(socket_path(name)):
            asked.append(name)
        elif units.get(daemons.unit_of(name), {}).get("ActiveState") in daemons.ACTIVE:
            out[name] = {"pending": "starting: it joins the run when it is up"}

    def sync(name: str) -> dict[str, Any]:
        try:
            reply = request(socket_path(name), "run_sync", timeout_s)
        except NoAnswer as e:
            return {"error": str(e)}
        return reply["result"] if reply.get("ok") else {"error": reply.get("error")}

    with ThreadPoolExecutor(max_workers=max(1, len(asked))) as pool:
        out |= dict(zip(asked, pool.map(sync, asked), strict=True))
    return out


def main(args: argparse.Namespace) -> int:
    action = args.command
    if action not in ACTIONS or args.args:
        print(f"usage: ssdaqctl run {'|'.join(ACTIONS)} [--obs-id N] [--comment TEXT] [--json]",
              file=sys.stderr)
        return EX_USAGE
    if action != "start" and (args.obs_id is not None or args.comment is not None):
        print("ssdaqctl: --obs-id and --comment go with `run start`", file=sys.stderr)
        return EX_USAGE
    try:
        if action == "start":
            run, ended = runs.start(args.obs_id, args.comment or "")
            result: dict[str, Any] = {"run": run.to_json(),
                                      "ended": ended.to_json() if ended else None}
        elif action == "stop":
            result = {"ended": runs.stop().to_json(), "run": None}
        else:
            state = runs.read()
            result = {"run": state.run.to_json() if state.run else None,
                      "last": state.last.to_json() if state.last else None,
                      "next_obs_id": state.next_obs_id}
    except (runs.RunError, OSError) as e:
        print(f"ssdaqctl: run {action}: {e}", file=sys.stderr)
        return EXIT_REFUSED
    result["state_file"] = str(runs.state_path())
    if action == "status":
        result["writers"] = {s.name: (s.reply or {}).get("run") for s in
                             daemons.gather(writer_names(), timeout_s=args.timeout or 2.0)
                             if s.running}
        failed = []
    else:
        result["writers"] = sync_writers(args.timeout or SYNC_TIMEOUT_S)
        failed = [n for n, r in result["writers"].items() if "error" in r]
    print(json.dumps(result, indent=2) if args.json else text(action, result))
    for name in failed:
        print(f"ssdaqctl: {name} did not switch: {result['writers'][name]['error']}",
              file=sys.stderr)
    return EXIT_NO_ANSWER if failed else 0


def _describe(run: dict[str, Any]) -> str:
    comment = f" ({run['comment']})" if run["comment"] else ""
    return f"observation {run['obs_id']}{comment} started {run['start_utc']} by {run['started_by']}"


def text(action: str, result: dict[str, Any]) -> str:
    lines = []
    if result.get("ended"):
        ended = result["ended"]
        seconds = (ended["stop_ns"] - ended["start_ns"]) / 1e9
        lines.append(f"observation {ended['obs_id']} ended {ended['stop_utc']} after {seconds:.1f} s")
    if result["run"]:
        run = result["run"]
        lines.append(_describe(run) + (f", open for {time.time() - run['start_ns'] / 1e9:.1f} s"
                                       if action == "status" else ""))
    elif action == "status":
        lines.append(f"no run is open; the next obs id is {result['next_obs_id']}")
    for name, reply in result["writers"].items():
        if reply is None:
            continue
        if "error" in reply or "pending" in reply:
            lines.append(f"  {name}: {reply.get('error') or reply.get('pending')}")
        else:
            lines.append(f"  {name}: {reply.get('file') or 'no file open'}"
                         + ("" if reply.get("recording", True) else " (not recording)"))
    return "\n".join(lines)
