"""The shifter's live page: its routes, and the shared feed behind them.

``GET /`` is the page (``static/index.html``; its script and style under ``/static/``, all in
the package: the page fetches nothing from elsewhere). It reads, and never writes:

* ``GET /api/geometry``: the CHEC-S pixel layout from :mod:`ssdaq.data.mapping`, the one that
  ``ssdaq-view`` draws with;
* ``GET /api/readout/latest``: the newest readout as JSON (number, TACK, time, 32 x 64 mV with
  null for NaN), for scripts;
* ``GET /api/history``: trigger, readout and timestamp rates over the last ``history_s``;
* ``GET /api/live``: a WebSocket with the newest readouts (paced) and the status of each poll
  (see :mod:`ssdaq.web.live`).

:func:`add_routes` is the one call ``make_app`` makes; the subscription, the status follower and
their cleanup are tied to the application's lifetime.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from ssdaq.data.mapping import CAMERA_SHAPE, MODULE_GRID, MODULE_SIDE, pixel_positions
from ssdaq.data.readout import N_TM, N_TM_PIX, SSReadout
from ssdaq.web.config import PageSettings
from ssdaq.web.history import RateHistory
from ssdaq.web.keys import CONFIG, HISTORY, HUB, POLLER
from ssdaq.web.live import LiveHub, ReadoutFeed
from ssdaq.web.poller import StatusPoller

STATIC = Path(str(resources.files("ssdaq.web") / "static"))
#: how often the status follower looks for a new poll (the poll itself runs at <= 1 Hz)
FOLLOW_S = 0.1
NO_CACHE = {"Cache-Control": "no-cache"}


def add_routes(app: web.Application) -> None:
    """Register the page's routes and its feed on ``app`` (which holds ``config`` and ``poller``)."""
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    app.router.add_get("/api/geometry", geometry)
    app.router.add_get("/api/readout/latest", readout_latest)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/live", live)
    app.cleanup_ctx.append(_feed)


async def _feed(app: web.Application) -> AsyncIterator[None]:
    settings: PageSettings = app[CONFIG].page
    poller: StatusPoller = app[POLLER]
    hub = LiveHub(settings)
    rates = RateHistory(settings.history_s, poller.settings.interval_s)
    app[HUB], app[HISTORY] = hub, rates
    feed = ReadoutFeed(settings.readout_endpoint, hub, asyncio.get_running_loop(),
                      settings.burst_s)
    feed.start()
    follower = asyncio.create_task(follow_status(poller, rates, hub))
    yield
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await asyncio.to_thread(feed.close)


async def follow_status(poller: StatusPoller, rates: RateHistory, hub: LiveHub) -> None:
    """Hand each new poll to the rate history and, as one message, to every browser."""
    while True:
        snapshot = poller.latest()
        point = rates.add(snapshot)
        if point is not None:
            hub.publish_status({"type": "status", "status": snapshot.to_json(),
                                "rates": point.to_json(), "web": hub.stats()})
        await asyncio.sleep(FOLLOW_S)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_CACHE)


def geometry_json() -> dict[str, Any]:
    """Where each pixel and module sits, in the readout's raw order (see ssdaq.data.mapping)."""
    rows, cols = pixel_positions()
    return {"shape": list(CAMERA_SHAPE), "module_side": MODULE_SIDE, "modules": N_TM,
            "pixels_per_module": N_TM_PIX, "row": rows.tolist(), "col": cols.tolist(),
            "module_grid": MODULE_GRID.tolist()}


async def geometry(request: web.Request) -> web.Response:
    return web.json_response(geometry_json())


def readout_json(readout: SSReadout) -> dict[str, Any]:
    """A readout for scripts: NaN (absent module) as null."""
    data = readout.data
    values = [[None if math.isnan(v) else v for v in row] for row in data.tolist()]
    return {"readout_number": readout.iro, "tack": readout.time, "cpu_time_unix": readout.cpu_t,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(readout.cpu_t_s))
            + f".{readout.cpu_t_ns // 1000:06d}Z",
            "modules_present": readout.modules_present.tolist(), "data_mv": values}


async def readout_latest(request: web.Request) -> web.Response:
    frame = request.app[HUB].frame
    if frame is None:
        return web.json_response({"error": "no readout received yet"}, status=503)
    return web.json_response(readout_json(SSReadout.from_bytes(frame.payload)))


async def history(request: web.Request) -> web.Response:
    return web.json_response(request.app[HISTORY].to_json())


async def live(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB].handle(request)
