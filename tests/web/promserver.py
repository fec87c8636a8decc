"""A real Prometheus (Debian's binary) on a scratch config, and its HTTP query API."""

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BINARY = "/usr/bin/prometheus"


class Prometheus:
    """``prometheus`` scraping ``targets`` every second with ``rules``, evaluated every second."""

    def __init__(self, work: Path, port: int, targets: list[str], rules: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = work / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "ssdaq", "static_configs": [{"targets": targets}]}],
        }))
        self.log = open(work / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait(lambda: self._get("/-/ready")[0] == 200, 30, "Prometheus ready")

    def _get(self, path: str) -> tuple[int, Any]:
        """(HTTP status, the decoded JSON or the body); (0, None) when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:  # a bad query: the reply says why
            status, body = e.code, e.read()
        except OSError:
            return 0, None
        return status, json.loads(body) if body.startswith(b"{") else body

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expr`` evaluates to now."""
        status, reply = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, (expr, reply)
        result = reply["data"]["result"]
        return result if reply["data"]["resultType"] == "vector" else [{"value": result}]

    def values(self, expr: str, label: str = "receiver") -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def firing(self) -> list[dict[str, str]]:
        """Labels of the alerts firing now."""
        reply = self._get("/api/v1/alerts")[1]
        return [a["labels"] for a in reply["data"]["alerts"] if a["state"] == "firing"]

    def wait(self, check: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while not (result := check()):
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}")
            time.sleep(0.25)
        return result

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
