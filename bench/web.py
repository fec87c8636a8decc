"""ssdaq-web benchmark: scrape time, what its polling costs the receivers, its own CPU and memory.

Ten daemons run as ``make demo`` runs them (the seven receivers and the three writers, each its
own process, loopback, a private runtime directory), fed at the camera's 10 readouts/s and 10
triggers/s by the simulators. Then:

* the receivers' CPU over ``WINDOW_S`` without ssdaq-web (the baseline), then with ssdaq-web
  polling every one of them once a second: the difference is what the polling costs each;
* ssdaq-web's own CPU and RSS over the same window, with nobody scraping or watching;
* the time of one ``/metrics`` scrape of the ten (wall clock, client side, sequential), beside an
  HTTP request the server answers without metrics (a 404: its HTTP floor), and the poll's own
  duration (all ten asked in parallel).

Bounded: about 100 s.
"""

import os
import socket
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ssdaq import streams
from ssdaq.tools import demo

WINDOW_S = 30.0
SCRAPES = 200
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_over(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU share of one core over the next ``seconds``."""
    before = {n: _cpu_s(p) for n, p in pids.items()}
    time.sleep(seconds)
    return {n: (_cpu_s(p) - before[n]) / seconds for n, p in pids.items()}


def _timed_get(url: str) -> float:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
    except urllib.error.HTTPError as e:
        e.read()
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49] * 1e3:5.1f} ms  p99 {q[98] * 1e3:5.1f} ms  max {max(values) * 1e3:5.1f} ms"


def _start_daq(procs: demo.Processes, plan: demo.Plan) -> list[str]:
    names = [s.name for s in streams.STREAMS]
    for name in names:
        cfg = demo.write_config(demo.receiver_class(name).config_class,
                                demo.receiver_settings(name, plan), plan.work / f"{name}.toml")
        procs.start(name, ["-m", "ssdaq.core.main", streams.get(name).receiver, "--config", str(cfg)])
    for stream in streams.recorded():
        writer = streams.writer_name(stream)
        cfg = demo.write_config(demo.WRITER_CONFIGS[stream], demo.writer_settings(stream, plan),
                                plan.work / f"{writer}.toml")
        procs.start(writer, ["-m", "ssdaq.tools.writer", stream, "--config", str(cfg)])
        names.append(writer)
    for name in names:
        procs.wait_ready(name, 60)
    return names


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="ssdaq-bench-web-", dir="/tmp") as tmp:
        work = Path(tmp)
        plan = demo.Plan("127.0.0.1", 20_000, 300.0, work / "data", work)
        plan.runtime.mkdir()
        procs = demo.Processes(plan)
        try:
            names = _start_daq(procs, plan)
            sim = ["-m", "ssdaq.simulators.cli"]
            procs.start("sim-tm", [*sim, "tm", "--rate", "10", "--duration", "300", "--host",
                                   plan.ip, "--port", str(plan.port(17000))])
            procs.start("sim-trigger", [*sim, "trigger", "--rate", "10", "--duration", "300",
                                        "--host", plan.ip, "--port", str(plan.port(8307))])
            time.sleep(3.0)  # readouts flowing, files open
            pids = {n: procs.procs[n].pid for n in names}
            alone = _cpu_over(pids, WINDOW_S)

            port = _free_port()
            (work / "web.toml").write_text('[poll]\nunits = "none"\n')
            web = procs.start("web", ["-m", "ssdaq.web.server", "--config", str(work / "web.toml"),
                                      "--listen", f"127.0.0.1:{port}"])
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    _timed_get(url + "/api/status")
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2.0)  # its imports and first polls done
            polled = _cpu_over({**pids, "ssdaq-web": web.pid}, WINDOW_S)
            web_rss = _rss_mb(web.pid)

            floor = [_timed_get(url + "/nothing-here") for _ in range(SCRAPES)]
            scrape = [_timed_get(url + "/metrics") for _ in range(SCRAPES)]
            body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
            answering = sum(1 for line in body.splitlines()
                            if line.startswith("ssdaq_up{") and line.endswith(" 1.0"))
            poll_s = float(next(line.split()[-1] for line in body.splitlines()
                                if line.startswith("ssdaq_web_poll_duration_seconds ")))
        finally:
            procs.stop_all()

    print(f"   {answering} receivers and writers answering, fed 10 readouts/s and 10 triggers/s")
    print(f"   receivers' CPU, share of a core over {WINDOW_S:g} s (criterion: polling adds <= 0.2 %)")
    print(f"   {'':18} {'alone':>8} {'polled':>8} {'added':>8}")
    for name in names:
        print(f"   {name:18} {alone[name]:8.2%} {polled[name]:8.2%} {polled[name] - alone[name]:+8.2%}")
    worst = max(names, key=lambda n: polled[n] - alone[n])
    print(f"   most added: {worst} {polled[worst] - alone[worst]:+.2%} of a core")
    print(f"   ssdaq-web itself, nobody watching: CPU {polled['ssdaq-web']:.2%} of a core, "
          f"RSS {web_rss:.1f} MB (criterion: <= 2 % and <= 80 MB)")
    print(f"   status poll of all {len(names)}, in parallel: {poll_s * 1e3:.1f} ms")
    print(f"   GET /metrics of {len(names)} ({len(body) // 1024} kB): {_ms(scrape)} (criterion: <= 50 ms)")
    print(f"   baseline, GET of a 404:      {_ms(floor)}")
