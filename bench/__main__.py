"""``python -m bench [NAME ...]``: run every benchmark in bench/ (or the named ones), in name order.

A benchmark is a module ``bench/<name>.py`` with a ``run()`` that prints its figures; adding one
needs no registration. A failing benchmark prints its traceback and the others still run; the
exit code is then 1.
"""

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def benchmarks() -> list[str]:
    here = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    available = benchmarks()
    unknown = sorted(set(argv) - set(available))
    if unknown:
        print(f"bench: no benchmark {', '.join(unknown)} (have: {', '.join(available)})",
              file=sys.stderr)
        return 64
    failed = []
    for name in argv or available:
        module = importlib.import_module(f"bench.{name}")
        if not callable(getattr(module, "run", None)):
            continue
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            module.run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"   ({time.monotonic() - start:.1f} s)\n", flush=True)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
