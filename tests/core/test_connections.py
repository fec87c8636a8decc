"""ConnectionGuard on a real listening socket: idle connections closed, the idlest replaced,
per-address limit, and a RecordStream's quiet senders kept."""

import asyncio
import logging
from dataclasses import dataclass

from ssdaq.core.connections import STREAM_COUNTERS, ConnectionGuard
from ssdaq.core.counters import Counters


@dataclass(frozen=True)
class Limits:
    idle_timeout_s: float = 0.2
    max_connections: int = 64
    max_connections_per_peer: int = 16


class Lines(asyncio.Protocol):
    """Counts lines; ``framed``: says when it is between records (a RecordStream)."""

    def __init__(self, seen: list[bytes]) -> None:
        self.seen, self.buffer = seen, b""

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        self.seen += lines


class FramedLines(Lines):
    def between_records(self) -> bool:
        return not self.buffer


async def serve(limits: Limits, protocol: type[Lines] = Lines):
    counters = Counters(logging.getLogger("ssdaq.test"), strict=True)
    counters.declare(STREAM_COUNTERS)
    guard = ConnectionGuard(asyncio.get_running_loop(), counters, limits)
    seen: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(
        guard.wrap(lambda: protocol(seen)), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], guard, counters, seen


async def shutdown(server: asyncio.Server, guard: ConnectionGuard, *writers) -> None:
    """Every client and every server-side transport closed (the loop must not leak them)."""
    for w in writers:
        w.close()
    guard.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)


async def connect(port: int, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within_s) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_no_bytes_for_idle_timeout_closes_even_between_records_and_traffic_keeps_it_open() -> None:
    async def main() -> None:
        server, port, guard, counters, seen = await serve(Limits(idle_timeout_s=0.3))
        (r_quiet, w_quiet), (r_busy, w_busy) = await connect(port), await connect(port)
        w_quiet.write(b"one whole line\n")
        for _ in range(6):  # 0.6 s of traffic every 0.1 s on one, silence on the other
            w_busy.write(b"x\n")
            await asyncio.sleep(0.1)
        assert not await closed(r_busy, 0.05)
        assert await closed(r_quiet, 0.05)
        assert (counters["idle_closed"], counters["connections"], len(guard.open)) == (1, 2, 1)
        assert seen.count(b"x") == 6 and b"one whole line" in seen
        await shutdown(server, guard, w_quiet, w_busy)
    asyncio.run(main())


def test_a_record_stream_quiet_between_records_stays_and_one_stuck_inside_goes() -> None:
    async def main() -> None:
        server, port, guard, counters, _ = await serve(Limits(), FramedLines)
        (r_quiet, w_quiet), (r_stuck, w_stuck) = await connect(port), await connect(port)
        w_quiet.write(b"whole\n")
        w_stuck.write(b"half a line")
        assert await closed(r_stuck, 1.0)
        assert not await closed(r_quiet, 0.3)
        assert counters["idle_closed"] == 1
        await shutdown(server, guard, w_quiet, w_stuck)
    asyncio.run(main())


def test_idle_timeout_zero_never_closes() -> None:
    async def main() -> None:
        server, port, guard, counters, _ = await serve(Limits(idle_timeout_s=0.0))
        reader, writer = await connect(port)
        writer.write(b"half")
        assert not await closed(reader, 0.5)
        assert counters["idle_closed"] == 0
        await shutdown(server, guard, writer)
    asyncio.run(main())


def test_a_newcomer_replaces_the_least_recently_active_not_the_oldest_connection() -> None:
    async def main() -> None:
        server, port, guard, counters, _ = await serve(Limits(idle_timeout_s=0, max_connections=3))
        conns = [await connect(port, f"127.0.0.{2 + k}") for k in range(3)]
        await asyncio.sleep(0.05)
        for k in (0, 2):  # the oldest and the newest talk; the middle one is the idlest
            conns[k][1].write(b"x\n")
        await asyncio.sleep(0.05)
        newcomer = await connect(port, "127.0.0.9")
        assert await closed(conns[1][0], 1.0)
        assert not await closed(conns[0][0], 0.1) and not await closed(conns[2][0], 0.1)
        assert (counters["replaced_connections"], counters["refused_connections"]) == (1, 0)
        assert len(guard.open) == 3 and sorted(guard.per_peer) == [
            "127.0.0.2", "127.0.0.4", "127.0.0.9"]
        await shutdown(server, guard, *(w for _, w in (*conns, newcomer)))
    asyncio.run(main())


def test_beyond_max_connections_per_peer_refused_and_the_slot_freed_on_close() -> None:
    async def main() -> None:
        server, port, guard, counters, _ = await serve(
            Limits(idle_timeout_s=0, max_connections_per_peer=2))
        a, b = await connect(port), await connect(port)
        c = await connect(port)
        assert await closed(c[0], 1.0)
        assert counters["refused_connections"] == 1 and guard.per_peer["127.0.0.1"] == 2
        a[1].close()
        await asyncio.sleep(0.05)
        d = await connect(port)
        assert not await closed(d[0], 0.2)
        assert counters["refused_connections"] == 1 and counters["connections"] == 3
        await shutdown(server, guard, *(w for _, w in (a, b, c, d)))
    asyncio.run(main())
