"""The live page: frame latency to a browser, and what watching costs ssdaq-web and the receivers.

The readout, trigger and timestamp receivers and ssdaq-web run as their own processes, fed by the
simulators at 10 readouts/s (one record per packet: a readout every 0.1 s, as the issue's figure
assumes). Three phases of ``PHASE_S`` each, every figure beside the baseline of the first:

* nobody watching: the CPU of ssdaq-web and of each receiver (the baseline);
* one headless Chromium on the page: frame latency, from this process's own subscriber receiving
  a readout (the publication, give or take zmq's hop on loopback) to the page having applied it
  (``window.ssdaq.frames``, the page's wall clock), p50/p99/max over the frames shown;
* 20 streaming clients of ``/api/live`` (plain Python WebSocket clients) plus the Chromium: the
  same figures, and the frames each client got.

CPU is utime + stime from /proc over the phase, as % of one core. Targets (the issue's): latency
p99 <= 100 ms with one browser; ssdaq-web <= 25 % of a core with 21 clients; the receivers'
CPU unchanged by watchers (they are never asked anything by a browser: ssdaq-web polls once
a second whatever the number of pages).
"""

import asyncio
import os
import threading
import time
from typing import Any

import aiohttp
import numpy as np

from ssdaq.data.readout import peek
from ssdaq.subscribers import ReadoutSubscriber
from tests.web import browser, livedaq

PHASE_S = 10.0
CLIENTS = 20
RATE = 10.0
RECEIVERS = ("readout", "trigger", "timestamp")
TICK_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


class Cpu:
    """CPU of the named processes over an interval, in % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = ({n: cpu_s(p) for n, p in pids.items()}, time.monotonic())

    def percent(self) -> dict[str, float]:
        used, t0 = self.start
        dt = time.monotonic() - t0
        return {n: 100 * (cpu_s(p) - used[n]) / dt for n, p in self.pids.items()}


class PublishTimes:
    """When each readout number reached a subscriber of our own (the publication's time)."""

    def __init__(self, endpoint: str) -> None:
        self.sub = ReadoutSubscriber(endpoint=endpoint)
        self.at: dict[int, float] = {}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                raw = self.sub.recv_raw(0.2, max_messages=100)
            except TimeoutError:
                continue
            now = time.time()
            for payload in raw:
                self.at[peek(payload)[0]] = now

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sub.close()


class Streamers:
    """``CLIENTS`` WebSocket clients of /api/live in one asyncio loop of their own."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.frames = [0] * n
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       daemon=True)
        self.thread.start()

    async def _client(self, session: aiohttp.ClientSession, i: int) -> None:
        async with session.ws_connect(self.url) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.frames[i] += 1

    async def _main(self) -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(self._client(session, i)) for i in range(self.n)]
            await self.stop.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join()


def latency_ms(page: Any, published: PublishTimes, since_ms: float) -> np.ndarray:
    frames = page.execute_script("return window.ssdaq.frames")
    out = [f["t_ms"] - published.at[f["number"]] * 1000 for f in frames
           if f["t_ms"] >= since_ms and f["number"] in published.at]
    return np.array(out)


def line(name: str, cpu: dict[str, float], base: dict[str, float]) -> str:
    parts = [f"{n} {cpu[n]:5.1f} % (baseline {base[n]:4.1f})" for n in ("web", *RECEIVERS)]
    return f"  {name:28} " + "; ".join(parts)


def run() -> None:
    if (why := browser.missing()) is not None:
        print(f"  skipped: {why}")
        return
    daq = livedaq.make()
    try:
        daq.start_daq()
        published = PublishTimes(daq.readout_endpoint)
        daq.start_simulators(3 * PHASE_S + 20, rate=RATE)
        pids = {"web": daq.procs["web"].pid, **{n: daq.procs[n].pid for n in RECEIVERS}}
        livedaq.wait_until(lambda: len(published.at) > 10, 20, "readouts flowing")
        print(f"  {RATE:g} readouts/s, phases of {PHASE_S:g} s; CPU in % of one core")
        cpu = Cpu(pids)
        time.sleep(PHASE_S)
        base = cpu.percent()
        print(line("nobody watching:", base, base))
        with browser.chromium() as page:
            page.get(daq.url)
            livedaq.wait_until(lambda: page.execute_script("return window.ssdaq.frames.length"),
                               10, "frames on the page")
            since, cpu = time.time() * 1000, Cpu(pids)
            time.sleep(PHASE_S)
            one = cpu.percent()
            lat = latency_ms(page, published, since)
            print(line("one Chromium:", one, base))
            print(f"  {'':28} frame latency p50 {np.percentile(lat, 50):.1f} ms, "
                  f"p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms over {len(lat)} "
                  f"frames ({len(lat) / PHASE_S:.1f}/s; target p99 <= 100 ms)")
            streamers = Streamers(daq.url.replace("http", "ws") + "api/live", CLIENTS)
            time.sleep(1.0)
            since, cpu = time.time() * 1000, Cpu(pids)
            start_frames = list(streamers.frames)
            time.sleep(PHASE_S)
            many = cpu.percent()
            got = np.subtract(streamers.frames, start_frames) / PHASE_S
            lat = latency_ms(page, published, since)
            streamers.close()
        print(line(f"{CLIENTS} clients + Chromium:", many, base))
        print(f"  {'':28} frame latency p50 {np.percentile(lat, 50):.1f} ms, "
              f"p99 {np.percentile(lat, 99):.1f} ms; each client {got.min():.1f}..{got.max():.1f} "
              f"frames/s; target: web <= 25 %, receivers as the baseline")
        published.close()
    finally:
        livedaq.remove(daq)
