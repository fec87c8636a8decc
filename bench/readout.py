"""ReadoutAssembler end to end: simulator -> receiver process -> subscriber, on loopback.

The receiver runs alone on one CPU; the simulator and the subscriber share the other (as in
performance.md). Every figure is printed beside the same figure of a raw UDP loop (no decoding,
no event building, no publishing) fed the same datagrams on the same CPU in the same run, and
their ratio. Phases (about 2 minutes in all):

* sustained 10 000 readouts/s for 10 s: completeness, kernel drops, CPU, latency;
* nominal 10 readouts/s: CPU;
* capacity: the simulator asked for the overload rate for 10 s, placed as above (it cannot reach
  that rate while sharing its core with the subscriber), then again with nobody subscribed, to
  show what publishing costs; what the receiver keeps
  up with is its headroom over the sustained rate (its CPU share at 10 000/s is not: it reads
  in smaller batches while it has time to spare, so its CPU share rises to meet the load);
* 60 s of overload at 3x the sustained rate: throughput and RSS, which must stay flat (the
  excess is dropped by the kernel and counted, never queued in the receiver). One core cannot
  send 30 000 readouts/s (96 000 datagrams/s) and take 16 KB readouts at the rate the receiver
  publishes them, so in this phase the subscriber runs on the receiver's CPU: the simulator
  has a core to itself, and the receiver shares its own, which only deepens the overload.

Latency, two ways. The receiver's own (``status`` -> ``latency_ms``): from the kernel's arrival
time of the first datagram of the batch that completed a readout (no later than its last
module's packet, so an upper bound) to the hand-over to zmq, over every complete readout of the
sustained phase (the receiver runs with ``latency_readouts`` large enough). End to end: from the
kernel's receive timestamp of a readout's first datagram (its CPU time plus the record's age in
that datagram, see ``ssdaq.data.event_builder``) to the subscriber holding the readout, which
adds zmq and the subscriber's share of a busy core. The raw loop's: from the same kernel
timestamp to its ``recvmsg`` returning.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from ssdaq.core.commands import request
from ssdaq.data.readout import HEADER

RECEIVER_CPU, LOAD_CPU = 1, 0
MODULES, RECORDS = 32, 10
SUSTAINED = 10_000
OVERLOAD = 3 * SUSTAINED
# readouts are 33 µs apart at the overload rate: the window must stay below half the spacing
WINDOW_NS = 15_000
NOMINAL = 10
SUSTAINED_S, NOMINAL_S, CAPACITY_S, OVERLOAD_S, RAW_S = 10, 10, 10, 60, 5
PY = sys.executable
HZ = os.sysconf("SC_CLK_TCK")

# The baseline: one datagram per call, nothing done with it. ``recvfrom_into`` for CPU and
# throughput; ``recvmsg_into`` with the kernel's receive timestamp for latency (a little dearer).
RAW_LOOP = """
import socket, struct, sys, time
port, stamped = int(sys.argv[1]), sys.argv[2] == "stamped"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE, as the receiver gets
s.setsockopt(socket.SOL_SOCKET, 35, stamped)  # SO_TIMESTAMPNS
s.bind(("127.0.0.1", port))
buf = bytearray(9000)
n, lat = 0, []
s.settimeout(3.0)
print("ready", flush=True)
try:
    while True:
        if stamped:
            _, anc, _, _ = s.recvmsg_into([buf], 64)
            sec, ns = struct.unpack("qq", anc[0][2][:16])
            lat.append(time.time_ns() - sec * 10**9 - ns)
        else:
            s.recvfrom_into(buf)
        n += 1
except socket.timeout:
    pass
print(n, *lat, flush=True)
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def udp_drops(port: int) -> int:
    """Kernel drops of the UDP socket bound to ``port`` (last column of /proc/net/udp)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port:
            return int(parts[-1])
    return 0


def simulate(port: int, rate: float, duration: float, tack0: int) -> dict:
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), PY, "-m", "ssdaq.simulators.cli", "tm", "--modules",
         str(MODULES), "--rate", str(rate), "--records-per-packet", str(RECORDS), "--duration",
         str(duration), "--port", str(port), "--tack0", str(tack0), "--json"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class Sampler(threading.Thread):
    """CPU share and, once a second, the RSS of a process while a phase runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.rss, self.cpu = pid, [], 0.0
        self._done = threading.Event()
        self._ticks, self._t0 = cpu_ticks(pid), time.monotonic()

    def run(self) -> None:
        while not self._done.wait(1.0):
            self.rss.append(rss_mb(self.pid))

    def finish(self) -> None:
        self.cpu = (cpu_ticks(self.pid) - self._ticks) / HZ / (time.monotonic() - self._t0)
        self._done.set()

    def rss_spread(self, warm_up: int = 2) -> float:
        """Max - min RSS (MB) after the first ``warm_up`` seconds."""
        rss = self.rss[warm_up:] or [float("nan")]
        return max(rss) - min(rss)


class Subscriber(threading.Thread):
    """Counts readouts, complete ones and gaps in their numbers; latency per readout. Runs on
    ``cpu`` with its own zmq context, whose I/O thread inherits that CPU."""

    def __init__(self, port: int, cpu: int, tack0: int, period_ns: int) -> None:
        super().__init__(daemon=True)
        self.port, self.cpu, self.tack0, self.period_ns = port, cpu, tack0, period_ns
        self.count = self.gaps = self.complete = 0
        self.latency_ns: list[int] = []
        self.last_iro = 0
        self.ready, self.stop = threading.Event(), threading.Event()

    def run(self) -> None:
        os.sched_setaffinity(0, {self.cpu})  # this thread; zmq's I/O thread is created below
        ctx = zmq.Context(io_threads=1)
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(f"tcp://127.0.0.1:{self.port}")
        self.ready.set()
        while not self.stop.is_set():
            if sock.poll(100):
                self.drain(sock)
        sock.close()
        ctx.term()

    def drain(self, sock: zmq.Socket) -> None:
        """Take every readout waiting (the subscriber shares a core with the simulator)."""
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now = time.time_ns()
            iro, tack, s, ns = HEADER.unpack_from(msg.buffer)
            self.count += 1
            self.gaps += iro != self.last_iro + 1 and self.last_iro != 0
            self.last_iro = iro
            data = np.frombuffer(msg.buffer, np.float64, offset=HEADER.size)
            self.complete += not np.isnan(data[::64]).any()  # channel 0 of each module
            # CPU time = arrival of the datagram minus the TACK distance to its last record
            k = round((tack - self.tack0) / self.period_ns)
            age = (RECORDS - 1 - k % RECORDS) * self.period_ns
            self.latency_ns.append(now - (s * 10**9 + ns + age))


@dataclass
class Phase:
    """What one load phase measured, of the receiver or of the raw loop."""

    rate: float
    sent_readouts: int = 0
    sent_datagrams: int = 0
    achieved_rate: float = 0.0
    received: int = 0  # readouts (receiver) or datagrams (raw loop)
    complete: int = 0
    gaps: int = 0
    kernel_drops: int = 0
    cpu: float = 0.0
    rss_spread: float = float("nan")
    latency_ms: np.ndarray = field(default_factory=lambda: np.array([np.nan]))
    build_latency: dict = field(default_factory=dict)  # the receiver's own, since it started
    counters: dict = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        """How long the sender took (longer than asked when it cannot keep the rate)."""
        return self.sent_readouts / self.achieved_rate if self.achieved_rate else float("nan")

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q))


def start_receiver(tmp: Path, port: int, pub_port: int) -> subprocess.Popen:
    cfg = tmp / "readout.toml"
    cfg.write_text(f'start_hold_s = 0.0\nlatency_readouts = {SUSTAINED * SUSTAINED_S}\n'
                   f'[monitor]\nenabled = false\n'
                   f'[assembler]\nreadout_window_ns = {WINDOW_NS}\n[sockets.data]\nip = "127.0.0.1"\n'
                   f'port = {port}\n[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\n')
    env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp), STATE_DIRECTORY=str(tmp))
    proc = subprocess.Popen(["taskset", "-c", str(RECEIVER_CPU), PY, "-m", "ssdaq.core.main", "readout",
                             "--config", str(cfg), "--log-level", "warning"], env=env)
    for _ in range(100):
        if (tmp / "readout.ctl").exists():
            return proc
        time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def status(tmp: Path) -> dict:
    return request(str(tmp / "readout.ctl"), "status", 5.0)["result"]


def receiver_phase(tmp: Path, proc: subprocess.Popen, port: int, pub_port: int, rate: float,
                   duration: float, subscriber_cpu: int | None = LOAD_CPU) -> Phase:
    """Send ``rate`` readouts/s for ``duration`` s to the running receiver. ``subscriber_cpu``
    None: nobody subscribes (zmq drops each readout at once), and what was published and
    complete comes from the receiver's counters instead of a subscriber."""
    tack0 = time.time_ns() // 10**9 * 10**9
    sub = None
    if subscriber_cpu is not None:
        sub = Subscriber(pub_port, subscriber_cpu, tack0, round(1e9 / rate))
        sub.start()
        sub.ready.wait()
        time.sleep(0.3)  # connected
    before = status(tmp)["counters"]
    sampler = Sampler(proc.pid)
    sampler.start()
    sent = simulate(port, rate, duration, tack0)
    sampler.finish()
    time.sleep(1.0)  # the last readouts wait for nothing, but let them arrive
    after = status(tmp)
    delta = {k: after["counters"][k] - before.get(k, 0) for k in after["counters"]}
    phase = Phase(rate, sent["readouts"], sent["packets"], sent["readouts"] / sent["elapsed_s"],
                  delta["complete"] + delta["incomplete"], delta["complete"],
                  kernel_drops=delta["kernel_drops"], cpu=sampler.cpu,
                  rss_spread=sampler.rss_spread(), build_latency=after["latency_ms"], counters=delta)
    if sub is not None:
        sub.stop.set()
        sub.join()
        phase.received, phase.complete, phase.gaps = sub.count, sub.complete, sub.gaps
        if sub.latency_ns:
            phase.latency_ms = np.array(sub.latency_ns) / 1e6
    return phase


def raw_phase(rate: float, duration: float, stamped: bool = False) -> Phase:
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(["taskset", "-c", str(RECEIVER_CPU), PY, "-c", RAW_LOOP, str(port),
                             "stamped" if stamped else "plain"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    sampler = Sampler(proc.pid)
    sampler.start()
    sent = simulate(port, rate, duration, time.time_ns() // 10**9 * 10**9)
    drops = udp_drops(port)
    sampler.finish()
    received, *lat = (int(v) for v in proc.stdout.readline().split())
    proc.wait()
    return Phase(rate, sent["readouts"], sent["packets"], sent["readouts"] / sent["elapsed_s"],
                 received, received, kernel_drops=drops, cpu=sampler.cpu,
                 rss_spread=sampler.rss_spread(),
                 latency_ms=np.array(lat) / 1e6 if lat else np.array([np.nan]))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b and np.isfinite(a / b) else "-"


def row(figure: str, receiver: str, raw: str, rel: str = "", limit: str = "") -> None:
    print(f"  {figure:<34} {receiver:>16} {raw:>16} {rel:>7}  {limit}")


def run() -> None:
    print(f"receiver on CPU {RECEIVER_CPU}; simulator and subscriber on CPU {LOAD_CPU}; "
          f"{MODULES} modules x {RECORDS} records per datagram; readout window {WINDOW_NS} ns")
    raw = raw_phase(SUSTAINED, RAW_S)
    raw_stamped = raw_phase(SUSTAINED, RAW_S, stamped=True)
    raw_nominal = raw_phase(NOMINAL, RAW_S)
    raw_over = raw_phase(OVERLOAD, RAW_S)
    with tempfile.TemporaryDirectory(prefix="ssdaq-bench-", dir="/tmp") as d:
        tmp = Path(d)
        port, pub_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        proc = start_receiver(tmp, port, pub_port)
        try:
            time.sleep(0.5)
            s = receiver_phase(tmp, proc, port, pub_port, SUSTAINED, SUSTAINED_S)
            n = receiver_phase(tmp, proc, port, pub_port, NOMINAL, NOMINAL_S)
            c = receiver_phase(tmp, proc, port, pub_port, OVERLOAD, CAPACITY_S)
            c0 = receiver_phase(tmp, proc, port, pub_port, OVERLOAD, CAPACITY_S, subscriber_cpu=None)
            o = receiver_phase(tmp, proc, port, pub_port, OVERLOAD, OVERLOAD_S, RECEIVER_CPU)
        finally:
            proc.terminate()
            proc.wait(10)

    dg = MODULES / RECORDS  # datagrams per readout
    row("figure", "receiver", "raw UDP loop", "ratio", "criterion")
    print(f"sustained: asked {SUSTAINED}/s for {SUSTAINED_S} s; sender achieved {s.achieved_rate:.0f}/s "
          f"(raw loop run: {raw.achieved_rate:.0f}/s)")
    pct_s = 100 * s.complete / max(s.sent_readouts, 1)
    pct_raw = 100 * raw.received / max(raw.sent_datagrams, 1)
    row("complete readouts / datagrams", f"{pct_s:.3f} %", f"{pct_raw:.3f} %", ratio(pct_s, pct_raw),
        ">= 99.99 %")
    row("published / sent", f"{s.received}/{s.sent_readouts}", f"{raw.received}/{raw.sent_datagrams}")
    row("gaps in readout numbers", f"{s.gaps}", "-", "", "0")
    row("kernel drops", f"{s.kernel_drops}", f"{raw.kernel_drops}", "", "0")
    row("CPU of a core", f"{s.cpu:.1%}", f"{raw.cpu:.1%}", ratio(s.cpu, raw.cpu))
    row("CPU per readout", f"{s.cpu / SUSTAINED * 1e6:.1f} us", f"{raw.cpu / SUSTAINED * 1e6:.1f} us",
        ratio(s.cpu, raw.cpu))
    limit = f"<= {WINDOW_NS / 1e6 + 20:g} ms (window + 20 ms)"
    build = s.build_latency
    assert build["count"] == s.complete, build  # the sustained phase comes first: all of it
    row("latency to publish, p50", f"{build['p50_ms']:.2f} ms", f"{raw_stamped.pct(50):.3f} ms",
        ratio(build["p50_ms"], raw_stamped.pct(50)))
    row("latency to publish, p99", f"{build['p99_ms']:.2f} ms", f"{raw_stamped.pct(99):.3f} ms",
        ratio(build["p99_ms"], raw_stamped.pct(99)), limit)
    row("latency to publish, max", f"{build['max_ms']:.2f} ms", f"{raw_stamped.pct(100):.3f} ms")
    row("latency to subscriber, p50", f"{s.pct(50):.2f} ms", f"{raw_stamped.pct(50):.3f} ms",
        ratio(s.pct(50), raw_stamped.pct(50)))
    row("latency to subscriber, p99", f"{s.pct(99):.2f} ms", f"{raw_stamped.pct(99):.3f} ms",
        ratio(s.pct(99), raw_stamped.pct(99)), limit)
    row("latency to subscriber, max", f"{s.pct(100):.2f} ms", f"{raw_stamped.pct(100):.3f} ms")
    print(f"nominal: {NOMINAL}/s for {NOMINAL_S} s")
    row("published / sent", f"{n.received}/{n.sent_readouts}",
        f"{raw_nominal.received}/{raw_nominal.sent_datagrams}")
    row("CPU of a core", f"{n.cpu:.2%}", f"{raw_nominal.cpu:.2%}", ratio(n.cpu, raw_nominal.cpu), "< 1 %")
    for cp, how in ((c, f"sharing CPU {LOAD_CPU} with the subscriber"), (c0, "nobody subscribed")):
        print(f"capacity: asked {OVERLOAD}/s for {CAPACITY_S} s; sender achieved "
              f"{cp.achieved_rate:.0f}/s, {how}")
        cap = cp.received / cp.elapsed_s
        row("readouts/s kept up with", f"{cap:.0f}", "-", "", f"headroom {cap / SUSTAINED:.2f}x")
        row("  of those sent", f"{cp.received / max(cp.sent_readouts, 1):.1%}", "-")
        row("complete of those published", f"{cp.complete / max(cp.received, 1):.2%}", "-")
        row("kernel drops (counted)", f"{cp.kernel_drops}", "-")
        row("CPU of a core", f"{cp.cpu:.1%}", "-")
    print(f"overload: asked {OVERLOAD}/s for {OVERLOAD_S} s; sender achieved {o.achieved_rate:.0f}/s "
          f"(raw loop run: {raw_over.achieved_rate:.0f}/s); the subscriber on CPU {RECEIVER_CPU}, "
          f"so that the sender has CPU {LOAD_CPU} to itself")
    got_s, raw_s = o.received / o.elapsed_s, raw_over.received / raw_over.elapsed_s / dg
    row("readouts/s kept up with", f"{got_s:.0f}", f"{raw_s:.0f}", ratio(got_s, raw_s))
    row("  of those sent", f"{o.received / max(o.sent_readouts, 1):.1%}",
        f"{raw_over.received / max(raw_over.sent_datagrams, 1):.1%}")
    row("complete of those published", f"{o.complete / max(o.received, 1):.2%}", "-")
    row("kernel drops (counted)", f"{o.kernel_drops}", f"{raw_over.kernel_drops}")
    row("incomplete readouts (counted)", f"{o.counters.get('incomplete', 0)}", "-")
    row("RSS spread after 2 s", f"{o.rss_spread:.1f} MB", f"{raw_over.rss_spread:.1f} MB", "",
        "<= 5 MB")
    row("CPU of a core", f"{o.cpu:.1%}", f"{raw_over.cpu:.1%}", ratio(o.cpu, raw_over.cpu))
    print(f"  the overload is {o.achieved_rate / max(got_s, 1):.1f}x what the receiver kept up with "
          f"and {o.achieved_rate / SUSTAINED:.1f}x the sustained rate")


if __name__ == "__main__":
    run()
