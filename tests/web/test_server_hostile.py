"""ssdaq-web against clients that would starve it: silent connections, half requests, floods.

aiohttp 3.8 never times out a connection that sends no request (or half of one): without the
limits, max_connections of them would hold the service for as long as they stay open.
"""

import asyncio
import socket
import time
from collections.abc import Callable

import aiohttp

from tests.web.conftest import BY_HAND, Web, get


def silent(port: int, source: str, first: bytes = b"") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    if first:
        s.sendall(first)
    return s


def closed_by_peer(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_silent_and_half_requests_are_closed_while_a_websocket_being_answered_stays(
        start_web: Callable[..., Web]) -> None:
    web = start_web(BY_HAND + "[sockets.http]\nidle_timeout_s = 0.5\n")

    async def live_for(seconds: float) -> bool:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(web.url + "/api/live") as ws:
                await asyncio.sleep(seconds)  # the page sends nothing (pings come after 1 s)
                return not ws.closed

    idle = [silent(web.port, "127.0.0.2") for _ in range(8)]
    half = [silent(web.port, "127.0.0.3", b"GET /metrics HTTP/1.1\r\nHost: x\r\n") for _ in range(8)]
    assert asyncio.run(live_for(1.5)), "a WebSocket being answered was closed as idle"
    assert all(closed_by_peer(s, 2.0) for s in idle + half)
    assert get(web.url + "/metrics").status == 200
    for s in idle + half:
        s.close()


def test_a_full_house_of_silent_connections_cannot_lock_out_a_scrape(
        start_web: Callable[..., Web]) -> None:
    web = start_web(BY_HAND + "[sockets.http]\nmax_connections = 8\nmax_connections_per_peer = 4\n")
    # 4 per address: the per-address limit, twice; then one more from a filled address
    held = [silent(web.port, f"127.0.0.{2 + k // 4}", b"GET / HTTP/1.1\r\n") for k in range(8)]
    refused = silent(web.port, "127.0.0.2")
    assert closed_by_peer(refused, 2.0)
    t0 = time.monotonic()
    assert get(web.url + "/metrics").status == 200  # replaces the one silent longest
    assert time.monotonic() - t0 < 2.0
    assert closed_by_peer(held[0], 2.0)
    assert not any(closed_by_peer(s, 0.05) for s in held[1:])
    for s in (*held, refused):
        s.close()
