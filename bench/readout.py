"""ReadoutAssembler end to end: simulator -> receiver process -> subscriber, on loopback.

The receiver runs alone on one CPU; the simulator and the subscriber share the other (as in
performance.md). Each figure is printed beside a raw ``recvfrom_into`` loop measured in the same
run on the same CPU with the same load, as a ratio. Phases (about 100 s in all):

* capacity of the raw loop (datagrams/s it keeps up with) and of the receiver (readouts/s);
* sustained 10 000 readouts/s: completeness, kernel drops, p99 latency, CPU;
* nominal 10 readouts/s: CPU of a core;
* 60 s overload at 3x the sustained rate: RSS must stay flat (the excess is dropped and counted).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from ssdaq.core.commands import request
from ssdaq.data.readout import HEADER

RECEIVER_CPU, LOAD_CPU = 1, 0
MODULES, RECORDS = 32, 10
SUSTAINED = 10_000
# readouts are 33 µs apart at the overload rate: the window must stay below half the spacing
WINDOW_NS = 15_000
NOMINAL = 10
OVERLOAD_S = 60
PY = sys.executable
HZ = os.sysconf("SC_CLK_TCK")

RAW_LOOP = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE, as the receiver gets
s.bind(("127.0.0.1", int(sys.argv[1])))
buf = bytearray(9000)
n = 0
s.settimeout(3.0)
print("ready", flush=True)
try:
    while True:
        s.recvfrom_into(buf)
        n += 1
except socket.timeout:
    pass
print(n, flush=True)
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


def simulate(port: int, rate: float, duration: float) -> dict:
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), PY, "-m", "ssdaq.simulators.cli", "tm", "--modules",
         str(MODULES), "--rate", str(rate), "--records-per-packet", str(RECORDS), "--duration",
         str(duration), "--port", str(port), "--json"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class Subscriber(threading.Thread):
    """Counts readouts and gaps in their numbers; latency from the arrival of a readout's data."""

    def __init__(self, ctx: zmq.Context, port: int, period_ns: int) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.period_ns = period_ns
        self.count = self.gaps = self.complete = 0
        self.latency_ns: list[int] = []
        self.last_iro = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(100):
                continue
            msg = self.sock.recv(copy=False)
            now = time.time_ns()
            iro, _, s, ns = HEADER.unpack_from(msg.buffer)
            self.count += 1
            self.gaps += iro != self.last_iro + 1 and self.last_iro != 0
            self.last_iro = iro
            data = np.frombuffer(msg.buffer, np.float64, offset=HEADER.size)
            self.complete += not np.isnan(data[::64]).any()
            # cpu time = arrival of the readout's first datagram minus the record's age in it
            age = (RECORDS - 1 - (iro - 1) % RECORDS) * self.period_ns
            self.latency_ns.append(now - (s * 10**9 + ns + age))
        self.sock.close()


def start_receiver(tmp: Path, port: int, pub_port: int) -> subprocess.Popen:
    cfg = tmp / "readout.toml"
    cfg.write_text(f'start_hold_s = 0.0\n[monitor]\nenabled = false\n'
                   f'[assembler]\nreadout_window_ns = {WINDOW_NS}\n[sockets.data]\nip = "127.0.0.1"\n'
                   f'port = {port}\n[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\n')
    env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp))
    proc = subprocess.Popen(["taskset", "-c", str(RECEIVER_CPU), PY, "-m", "ssdaq.core.main", "readout",
                             "--config", str(cfg), "--log-level", "warning"], env=env)
    for _ in range(100):
        if (tmp / "readout.ctl").exists():
            return proc
        time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def status(tmp: Path) -> dict:
    return request(str(tmp / "readout.ctl"), "status", 5.0)["result"]


def phase(tmp: Path, proc: subprocess.Popen, ctx: zmq.Context, port: int, pub_port: int, rate: float,
          duration: float, sample_rss: bool = False) -> dict:
    sub = Subscriber(ctx, pub_port, round(1e9 / rate))
    sub.start()
    time.sleep(0.3)
    before = status(tmp)["counters"]
    ticks0, t0 = cpu_ticks(proc.pid), time.monotonic()
    rss: list[float] = []
    sampler_stop = threading.Event()

    def sample() -> None:
        while not sampler_stop.wait(1.0):
            rss.append(rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_rss:
        sampler.start()
    sent = simulate(port, rate, duration)
    cpu = (cpu_ticks(proc.pid) - ticks0) / HZ / (time.monotonic() - t0)
    time.sleep(1.0)  # the last readouts wait for nothing, but let them arrive
    sampler_stop.set()
    sub.stop.set()
    sub.join()
    after = status(tmp)["counters"]
    delta = {k: after[k] - before.get(k, 0) for k in after}
    lat = np.array(sub.latency_ns) / 1e6 if sub.latency_ns else np.array([np.nan])
    return {"rate": rate, "sent_readouts": sent["readouts"], "achieved_rate": sent["readouts"] / sent["elapsed_s"],
            "received": sub.count, "complete": sub.complete, "gaps": sub.gaps, "cpu": cpu,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "kernel_drops": delta["kernel_drops"], "rss": rss, "counters": delta}


def raw_loop(rate: float, duration: float) -> tuple[int, int, float]:
    """(datagrams sent, datagrams received, CPU share) for a bare recvfrom_into loop."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(["taskset", "-c", str(RECEIVER_CPU), PY, "-c", RAW_LOOP, str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    ticks0, t0 = cpu_ticks(proc.pid), time.monotonic()
    sent = simulate(port, rate, duration)
    cpu = (cpu_ticks(proc.pid) - ticks0) / HZ / (time.monotonic() - t0)
    received = int(proc.stdout.readline())
    proc.wait()
    return sent["packets"], received, cpu


def run() -> None:
    print(f"receiver on CPU {RECEIVER_CPU}; simulator and subscriber on CPU {LOAD_CPU}; "
          f"{MODULES} modules x {RECORDS} records per datagram")
    dg_per_ro = MODULES / RECORDS
    sent, got, raw_cpu = raw_loop(SUSTAINED, 5)
    print(f"raw recvfrom_into loop at {SUSTAINED} readouts/s ({SUSTAINED * dg_per_ro:.0f} datagrams/s): "
          f"received {got}/{sent} datagrams, CPU {raw_cpu:.1%} of a core")
    sent_n, got_n, raw_cpu_nominal = raw_loop(NOMINAL, 5)
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="ssdaq-bench-", dir="/tmp") as d:
        tmp = Path(d)
        port, pub_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        proc = start_receiver(tmp, port, pub_port)
        try:
            time.sleep(0.5)
            s = phase(tmp, proc, ctx, port, pub_port, SUSTAINED, 10)
            pct = 100 * s["complete"] / max(s["sent_readouts"], 1)
            print(f"sustained: asked {SUSTAINED}/s, sender achieved {s['achieved_rate']:.0f}/s; "
                  f"published {s['received']}/{s['sent_readouts']} ({pct:.3f} % complete), "
                  f"number gaps {s['gaps']}, kernel drops {s['kernel_drops']}")
            print(f"  latency from the data's arrival to the subscriber: p50 {s['p50_ms']:.2f} ms, "
                  f"p99 {s['p99_ms']:.2f} ms (limit: readout window {WINDOW_NS / 1e6:g} ms + 20 ms)")
            print(f"  receiver CPU {s['cpu']:.1%} of a core; raw loop {raw_cpu:.1%} "
                  f"(ratio {s['cpu'] / max(raw_cpu, 1e-9):.1f}x)")
            n = phase(tmp, proc, ctx, port, pub_port, NOMINAL, 10)
            ratio = f"{n['cpu'] / raw_cpu_nominal:.1f}x" if raw_cpu_nominal else "raw loop below the clock tick"
            print(f"nominal {NOMINAL}/s: published {n['received']}/{n['sent_readouts']}, receiver CPU "
                  f"{n['cpu']:.2%} of a core (raw loop {raw_cpu_nominal:.2%}; {ratio})")
            over = 3 * SUSTAINED
            o = phase(tmp, proc, ctx, port, pub_port, over, OVERLOAD_S, sample_rss=True)
            rss = np.array(o["rss"][2:] or [np.nan])  # after the first seconds of warm-up
            print(f"overload {over}/s for {OVERLOAD_S} s (sender achieved {o['achieved_rate']:.0f}/s): "
                  f"published {o['received']}/{o['sent_readouts']}, "
                  f"{100 * o['complete'] / max(o['sent_readouts'], 1):.2f} % complete; "
                  f"kernel drops {o['kernel_drops']} (counted), incomplete {o['counters']['incomplete']}")
            print(f"  RSS {rss.min():.1f}..{rss.max():.1f} MB (spread {rss.max() - rss.min():.1f} MB, "
                  f"limit 5 MB); receiver CPU {o['cpu']:.1%}")
        finally:
            proc.terminate()
            proc.wait(10)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    run()
