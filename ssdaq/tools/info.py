"""``ssdaq-info FILE...``: what a recorded file says about itself (``/Provenance``).

Prints the observation, the times, the rows, the loss ledger (every counter of every process
that moved, losses first) and the sequence gaps; ``--config`` adds the configurations and
drop-ins stored as TOML, ``--json`` prints everything as JSON (one object per line and file).
Exit status 0, 65 when a file cannot be read or has no provenance, 64 on a usage error.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

from ssdaq.core.cli import Parser

EX_DATAERR = os.EX_DATAERR


def parser() -> Parser:
    p = Parser(prog="ssdaq-info", description=__doc__.split("\n\n")[0],
               epilog="Exit status: 0 ok, 65 a file is unreadable or has no provenance, "
                      "64 usage error.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="an ssdaq HDF5 file")
    p.add_argument("--json", action="store_true", help="everything, as JSON (one object per file)")
    p.add_argument("--config", action="store_true",
                   help="also print the stored configurations and drop-ins")
    return p


def _is_text(key: str) -> bool:
    """The attributes that hold TOML or drop-in texts (long: shown with --config)."""
    return key == "writer_config" or key.startswith(("config_", "dropins_"))


def _by_process(ledger: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in ledger:
        out.setdefault((row["source"], row["pid"]), []).append(row)
    return out


def _never(a: dict[str, Any]) -> str:
    """How a file that was never closed came to be complete (ssdaq.io.recovery)."""
    how = f"{a['recovery']} at {a.get('recovered_utc')}" if a.get("recovery") else "recovered"
    return f"never: {how} after a crash, rows up to the last flush, no ledger"


def text(path: Path, info: dict[str, Any], with_config: bool) -> str:
    from ssdaq.io.provenance import NO_OBS, losses

    a = info["attributes"]
    obs = "none" if a.get("obs_id", NO_OBS) == NO_OBS else f"{a['obs_id']} chunk {a['chunk']}"
    lines = [
        f"{path}",
        f"  stream {a.get('stream')} by {a.get('writer')} (pid {a.get('writer_pid')}) on "
        f"{a.get('host')}, ssdaq {a.get('ssdaq_version')}, record {a.get('record')}",
        f"  observation {obs}" + (f": {a['comment']}" if a.get("comment") else "")
        + (f" (run started {a['run_start_utc']} by {a['started_by']})"
           if a.get("run_start_utc") else ""),
        f"  opened {a.get('opened_utc')}, closed {a.get('closed_utc') or _never(a)}",
        f"  {a.get('rows', '?')} rows, first {a.get('first_row_utc') or '-'}, "
        f"last {a.get('last_row_utc') or '-'}",
        f"  ledger from {a.get('interval_start_utc')} to {a.get('closed_utc') or '?'}:",
    ]
    for (source, pid), rows in _by_process(info["ledger"]).items():
        moved = ", ".join(f"{r['counter']} {r['delta']}" for r in rows
                          if r["kind"] != "loss" and r["delta"])
        dropped = ", ".join(f"{r['counter']} {r['delta']}" for r in rows
                            if r["kind"] == "loss" and r["delta"])
        exact = "" if all(r["exact"] for r in rows) else " (not exact: no answer at a bound)"
        lines.append(f"    {source} pid {pid}: {moved or 'nothing counted'}; "
                     + (f"LOST {dropped}" if dropped else "lost nothing") + exact)
    if a.get("upstream_unanswered"):
        lines.append(f"    no answer from: {a['upstream_unanswered']}")
    for gap in info["gaps"]:
        lines.append(f"    {gap['kind']:8} {gap['column']} {gap['last_before']} -> "
                     f"{gap['first_after']}" + (f": {gap['missing']} missing"
                                                if gap["kind"] == "gap" else ""))
    lost = losses(info["ledger"])
    missing = sum(g["missing"] for g in info["gaps"])
    lines.append("  nothing lost" if not lost and not missing else
                 f"  lost: {', '.join(f'{k} {v}' for k, v in lost.items()) or '-'}; "
                 f"{missing} missing in sequence gaps")
    stored = sorted(k for k in a if _is_text(k) and a[k])
    if with_config:
        for key in stored:
            lines += [f"  --- {key}", *("    " + line for line in str(a[key]).splitlines())]
    elif stored:
        lines.append(f"  stored: {', '.join(stored)} (--config prints them)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from ssdaq.io import provenance
    except ImportError:
        print("ssdaq-info: needs h5py (Debian: apt install python3-h5py)", file=sys.stderr)
        return os.EX_UNAVAILABLE
    code = 0
    for path in args.files:
        try:
            info = provenance.read(path)
        except OSError as e:
            print(f"ssdaq-info: {path}: {e}", file=sys.stderr)
            code = EX_DATAERR
            continue
        if info["attributes"] is None:
            print(f"ssdaq-info: {path}: no /Provenance (written before ssdaq recorded it?)",
                  file=sys.stderr)
            code = EX_DATAERR
            continue
        print(json.dumps({"file": str(path), **info}) if args.json
              else text(path, info, args.config))
    return code


if __name__ == "__main__":
    sys.exit(main())
