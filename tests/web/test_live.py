"""The page's routes and live feed in-process: a real aiohttp server on loopback, a real zmq
publisher feeding the one subscription, real WebSocket clients (and a raw socket that plays a
half-open browser)."""

import asyncio
import base64
import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import zmq
from aiohttp import web

from ssdaq.data.mapping import MODULE_GRID, pixel_positions
from ssdaq.data.readout import N_TM, SSREADOUT_BYTES
from ssdaq.web import keys, page
from ssdaq.web.config import PageSettings, PollSettings, WebConfig
from ssdaq.web.history import RateHistory
from ssdaq.web.live import hold_until
from ssdaq.web.poller import Snapshot, StatusPoller
from ssdaq.web.server import make_app
from tests.conftest import free_port
from tests.livepub import Publisher, readout

PACE = PageSettings()


def test_a_frame_outside_the_interval_goes_at_once() -> None:
    assert hold_until(10.0, 9.7, 10.0, PACE) == 10.0


def test_a_fresh_frame_inside_the_interval_waits_for_its_end() -> None:
    assert hold_until(10.17, 10.0, 10.17, PACE) == pytest.approx(10.2)


def test_a_frame_that_would_be_stale_at_the_interval_end_waits_for_its_successor() -> None:
    assert hold_until(10.1, 10.0, 10.1, PACE) is None


def test_history_is_bounded_by_its_window() -> None:
    history = RateHistory(window_s=60, poll_interval_s=1.0)
    for polls in range(1, 500):
        history.add(Snapshot(1000.0 + polls, float(polls), 0.0, False, (), polls=polls))
    assert len(history.points) <= 61
    assert history.points[-1].t_unix - history.points[0].t_unix <= 60
    assert history.add(Snapshot(1499.0, 499.0, 0.0, False, (), polls=499)) is None  # seen


@asynccontextmanager
async def served(publisher: Publisher, **page_settings: object) -> AsyncIterator[tuple[str, web.Application]]:
    config = WebConfig(page=dataclasses.replace(PageSettings(), readout_endpoint=publisher.endpoint,
                                                **page_settings))
    app = make_app(config, StatusPoller(PollSettings(units="none")))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(socket.SOCK_STREAM)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


@pytest.fixture
def pub(runtime_dir: Path) -> Iterator[Publisher]:
    ctx = zmq.Context()
    p = Publisher(ctx)
    yield p
    p.sock.close(linger=0)
    ctx.term()


async def wait_for(check, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.02)


def test_latest_readout_and_geometry_for_scripts(pub: Publisher) -> None:
    async def main() -> None:
        async with served(pub) as (url, app), aiohttp.ClientSession() as http:
            async with http.get(url + "/api/readout/latest") as r:
                assert r.status == 503
            pub.wait_subscriber()
            sent = readout(41, absent=(5, 30))
            pub.send(sent.pack())
            await wait_for(lambda: app[keys.HUB].frame is not None, 5, "the readout")
            async with http.get(url + "/api/readout/latest") as r:
                got = await r.json()
            assert got["readout_number"] == 41 and got["tack"] == sent.time
            assert got["modules_present"] == [m for m in range(N_TM) if m not in (5, 30)]
            assert got["data_mv"][5] == [None] * 64
            assert np.array(got["data_mv"][0]).tolist() == sent.data[0].tolist()
            async with http.get(url + "/api/geometry") as r:
                geo = await r.json()
            rows, cols = pixel_positions()
            assert geo["row"] == rows.tolist() and geo["col"] == cols.tolist()
            assert geo["module_grid"] == MODULE_GRID.tolist()
            async with http.get(url + "/") as r:
                html = await r.text()
            for asset in ("/static/page.js", "/static/page.css"):
                assert asset in html
                async with http.get(url + asset) as r:
                    assert r.status == 200
    asyncio.run(main())


def test_the_page_fetches_nothing_from_elsewhere() -> None:
    for path in page.STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in text, path
        assert "//cdn" not in text and "@import" not in text, path


def test_live_sends_the_published_bytes_and_refuses_clients_beyond_max(pub: Publisher) -> None:
    async def main() -> None:
        async with served(pub, max_clients=2) as (url, app), aiohttp.ClientSession() as http:
            hub = app[keys.HUB]
            one = await http.ws_connect(url + "/api/live")
            two = await http.ws_connect(url + "/api/live")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url + "/api/live")
            assert refused.value.status == 503 and hub.counters["refused_clients"] == 1
            pub.wait_subscriber()
            sent = readout(7).pack()
            pub.send(sent)
            for ws in (one, two):
                msg = await ws.receive(timeout=5)
                while msg.type != aiohttp.WSMsgType.BINARY:
                    msg = await ws.receive(timeout=5)
                assert msg.data == sent and len(msg.data) == SSREADOUT_BYTES
            await one.close()
            await wait_for(lambda: hub.clients == 1, 5, "the slot freed")
            three = await http.ws_connect(url + "/api/live")
            await three.close()
            await two.close()
    asyncio.run(main())


def test_a_half_open_client_that_answers_no_ping_is_disconnected(pub: Publisher) -> None:
    async def main() -> None:
        async with served(pub, ping_interval_s=1.0) as (url, app):
            hub = app[keys.HUB]
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write((f"GET /api/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            assert (await reader.readline()).startswith(b"HTTP/1.1 101")
            await wait_for(lambda: hub.clients == 1, 5, "the connection counted")
            # from here on the peer reads nothing and answers nothing, as a vanished laptop
            await wait_for(lambda: hub.clients == 0, 5, "the slot freed")
            assert hub.counters["closed_no_pong"] == 1
            writer.close()
    asyncio.run(main())
