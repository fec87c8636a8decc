"""The live feed of the web page: one readout subscription and one status follower shared by
every browser, each browser paced on its own.

Data flow, one way: the readout PUB -> :class:`ReadoutFeed` (one zmq SUB in a thread: the
:class:`~ssdaq.subscribers.ReadoutSubscriber` of scripts, with its gap tracking) ->
:meth:`LiveHub.publish_readout` (keeps only the newest) -> each browser's
:meth:`LiveHub.serve` task, which sends the newest readout when its pacing allows (at most one
frame per ``min_interval_s``) and the status once per poll. Nothing queues per browser: a task
that is still sending, or whose interval is running, simply takes the newest frame when it is
free again (latest wins), so a slow browser gets fewer frames and costs no memory.

The readout goes to the browser as a binary WebSocket message holding the published SSReadout
bytes unchanged (16 416 B: header, then 32 x 64 float64 mV, NaN for absent modules): no
encoding per frame or per browser, and the page shows the exact published values. Status goes
as JSON text, encoded once per poll for all browsers.

WebSocket rather than server-sent events: SSE carries text only (a readout would have to be
encoded, per frame, into ~40 kB of JSON or base64), and a WebSocket's ping/pong lets the
server find and close half-open connections that would otherwise hold a client slot.
"""

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from ssdaq.core.counters import Counters
from ssdaq.data.readout import SSREADOUT_BYTES, peek
from ssdaq.subscribers import ReadoutSubscriber
from ssdaq.web.config import PageSettings

log = logging.getLogger("ssdaq.web.live")

#: what the hub counts (``/api/live`` and the page's footer show them)
COUNTERS = ("readouts", "frames_sent", "frames_skipped", "status_sent", "refused_clients",
            "closed_stalled", "closed_no_pong", "client_messages")


@dataclass(frozen=True)
class Frame:
    """One readout as published, with its readout number and when it reached ssdaq-web."""

    payload: bytes
    number: int
    tack: int
    received_monotonic: float


def hold_until(now: float, last_sent: float, arrived: float, settings: PageSettings) -> float | None:
    """When a browser may be sent a frame that ``arrived``, at ``now``, its last frame having
    been sent at ``last_sent`` (or having arrived then, if it was sent at once); None: not this
    frame (wait for its successor).

    Outside the browser's interval: now. Inside: at the interval's end, if the frame would then
    be at most ``max_hold_s`` old; an older frame is skipped, since at the camera's steady rate
    its successor arrives about when the interval ends and goes out fresh (at 10 readouts/s and
    5 frames/s every other readout is shown, each within milliseconds of its publication).
    ``LiveHub.serve`` still sends a skipped frame after ``settle_s`` if nothing newer came,
    so the page always ends on the newest readout.
    """
    free_at = last_sent + settings.min_interval_s
    if now >= free_at:
        return now
    return free_at if free_at - arrived <= settings.max_hold_s else None


class LiveHub:
    """The newest readout and status, and the live WebSocket connections that receive them."""

    def __init__(self, settings: PageSettings) -> None:
        self.settings = settings
        self.counters = Counters(log)
        self.counters.declare(COUNTERS)
        self.frame: Frame | None = None
        self.status_text: str | None = None
        self.status_version = 0
        self.clients = 0
        self.missed_readouts: Callable[[], int] = lambda: 0
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ producers

    def publish_readout(self, payload: bytes, received_monotonic: float) -> None:
        """A new readout (in the event loop's thread): it replaces the previous one."""
        number, tack = peek(payload)
        self.frame = Frame(payload, number, tack, received_monotonic)
        self.counters.add("readouts")
        self._wake()

    def publish_status(self, message: dict[str, Any]) -> None:
        """A new status message for every browser (encoded here, once)."""
        self.status_text = json.dumps(message, allow_nan=False)
        self.status_version += 1
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def stats(self) -> dict[str, Any]:
        return {"clients": self.clients, "max_clients": self.settings.max_clients,
                "missed_readouts": self.missed_readouts(), **self.counters.values}

    # ------------------------------------------------------------------ one browser

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/live``: the WebSocket, or 503 when ``max_clients`` are connected."""
        if self.clients >= self.settings.max_clients:
            self.counters.report("refused_clients", detail=f"{self.clients} live clients already",
                                 peer=request.remote or "")
            raise web.HTTPServiceUnavailable(
                text=f"ssdaq-web: {self.clients} live clients already (max_clients)\n",
                headers={"Retry-After": "10"})
        ws = web.WebSocketResponse(heartbeat=self.settings.ping_interval_s, compress=False,
                                   max_msg_size=4096)
        await ws.prepare(request)
        self.clients += 1
        sender = asyncio.create_task(self.serve(ws, request))
        try:
            async for msg in ws:  # the page sends nothing; reading keeps pings and close working
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.counters.add("client_messages")
        finally:
            sender.cancel()
            try:
                await asyncio.gather(sender, return_exceptions=True)
                if _unanswered_ping(ws):
                    self.counters.report("closed_no_pong", detail="no answer to a ping",
                                         peer=request.remote or "")
            finally:  # last, even if cancelled meanwhile: a freed slot has its close counted
                self.clients -= 1
        return ws

    async def serve(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """Send the newest readout (paced) and each new status until the connection ends.

        A send that does not complete within ``send_timeout_s`` (the browser stopped reading),
        or a ping unanswered (aiohttp then marks the socket closed), aborts the connection: a
        plain close would wait forever for a half-open peer to take the unsent bytes.
        """
        s = self.settings
        sent_number: int | None = None
        sent_status = 0
        last_sent = -float("inf")
        try:
            while not ws.closed:
                changed = self._changed
                frame, due = self.frame, None
                if frame is not None and frame.number != sent_number:
                    now = time.monotonic()
                    due = hold_until(now, last_sent, frame.received_monotonic, s)
                    if due is None and now - frame.received_monotonic >= s.settle_s:
                        due = now  # nothing newer came: show the newest after all
                    if due is not None and due > now:
                        await asyncio.sleep(due - now)
                        frame = self.frame or frame  # the newest by now
                    if due is not None:
                        start = time.monotonic()
                        await self._send(ws, frame.payload, binary=True)
                        if sent_number is not None and frame.number > sent_number + 1:
                            self.counters.add("frames_skipped", frame.number - sent_number - 1)
                        # the interval runs from the frame's arrival when it went out promptly:
                        # at a steady camera rate the frames then keep their phase (no drift)
                        fresh = start - frame.received_monotonic <= s.max_hold_s
                        sent_number = frame.number
                        last_sent = frame.received_monotonic if fresh else start
                        self.counters.add("frames_sent")
                if self.status_text is not None and self.status_version != sent_status:
                    sent_status = self.status_version
                    await self._send(ws, self.status_text, binary=False)
                    self.counters.add("status_sent")
                if due is None or due <= time.monotonic():
                    await self._wait(changed, frame, sent_number)
            if not _unanswered_ping(ws):
                return  # closed by the browser or at shutdown
        except TimeoutError:
            self.counters.report("closed_stalled", detail=f"a send took over {s.send_timeout_s} s",
                                 peer=request.remote or "")
        except ConnectionResetError:
            pass
        if request.transport is not None:
            request.transport.abort()

    async def _send(self, ws: web.WebSocketResponse, data: bytes | str, binary: bool) -> None:
        send = ws.send_bytes(data) if binary else ws.send_str(data)  # type: ignore[arg-type]
        await asyncio.wait_for(send, self.settings.send_timeout_s)

    async def _wait(self, changed: asyncio.Event, frame: Frame | None, sent: int | None) -> None:
        """Until something new (or a skipped frame's settle time; at most 1 s, so that a
        connection aiohttp closed is noticed)."""
        timeout = 1.0
        if frame is not None and frame.number != sent:
            timeout = max(0.0, frame.received_monotonic + self.settings.settle_s - time.monotonic())
        try:
            await asyncio.wait_for(changed.wait(), min(timeout, 1.0))
        except TimeoutError:
            pass


def _unanswered_ping(ws: web.WebSocketResponse) -> bool:
    """Whether aiohttp closed ``ws`` for want of a pong (what it records then)."""
    return ws.closed and isinstance(ws.exception(), asyncio.TimeoutError)


class ReadoutFeed:
    """The one readout subscription of ssdaq-web: a ReadoutSubscriber read in its own thread,
    handing the newest well-formed readout of each batch to the hub in the loop's thread."""

    def __init__(self, endpoint: str, hub: LiveHub, loop: asyncio.AbstractEventLoop,
                 burst_s: float) -> None:
        self.sub = ReadoutSubscriber(endpoint=endpoint, rcvhwm=1000)
        self.hub, self.loop, self.burst_s = hub, loop, burst_s
        hub.missed_readouts = lambda: self.sub.sequence.missed
        self._running = True
        self._thread = threading.Thread(target=self._run, name="readout-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while self._running:
            try:
                batch = self.sub.recv_raw(0.25, max_messages=1000)
            except TimeoutError:
                continue
            batch += self._rest_of_burst()
            good = [p for p in batch if len(p) == SSREADOUT_BYTES]
            if len(good) < len(batch):
                self.sub.counters.report("bad_size", len(batch) - len(good),
                                         detail="not an SSReadout", peer=self.sub.endpoint)
            if good:
                self.loop.call_soon_threadsafe(self.hub.publish_readout, good[-1], time.monotonic())

    def _rest_of_burst(self) -> list[bytes]:
        """What follows within ``burst_s`` of the last message (a packet of ten records
        completes ten readouts at once, published back to back): the burst's newest is the one
        to show. Bounded, so that a steady high rate still hands a readout on regularly."""
        more: list[bytes] = []
        for _ in range(10):
            try:
                more += self.sub.recv_raw(self.burst_s, max_messages=1000)
            except TimeoutError:
                break
        return more

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.sub.close()
