"""``ssdaq-web``: the HTTP service (``ssdaq-web.socket`` + ``.service``, or ``--listen`` by hand).

Startup: the listening socket (systemd's, named ``http``; else ``--listen`` or ``[sockets.http]``),
a first poll (so the request that socket-activated the service gets data), then ``READY=1``.
Serving: the poller runs once a second; ``STATUS=`` says how many receivers answered;
``WATCHDOG=1`` while the loop turns and the poller is alive. Connections are limited as every TCP
input's (``[sockets.http]``: idle, total, per address; :mod:`ssdaq.core.connections`): one that
sends nothing, or half a request, is closed after ``idle_timeout_s``, while one being answered
(a scrape, a page's WebSocket) may stay silent. SIGTERM/SIGINT: ``STOPPING=1``,
connections closed, exit 0. Startup failures are one log line and a sysexits code (78 for a
rejected configuration, naming file and key; 69 for a socket that cannot be bound).
"""

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

from aiohttp import web

from ssdaq.core import config as configlib
from ssdaq.core import logging as sslogging
from ssdaq.core import systemd
from ssdaq.core.cli import Parser
from ssdaq.core.connections import STREAM_COUNTERS, ConnectionGuard
from ssdaq.core.counters import Counters
from ssdaq.core.errors import EX_OK, EX_SOFTWARE, SsdaqError, UnavailableError
from ssdaq.core.lifecycle import Lifecycle
from ssdaq.core.main import CONFIG_DIR, add_daemon_options, check_or_print, startup_failed
from ssdaq.core.sockets import SocketSource, bind
from ssdaq.web import page
from ssdaq.web.config import WebConfig
from ssdaq.web.keys import CONFIG, METRICS, POLLER
from ssdaq.web.metrics import Metrics
from ssdaq.web.poller import StatusPoller

NAME = "web"
CONFIG_FILE = CONFIG_DIR / "web.toml"
#: the FileDescriptorName= of ssdaq-web.socket and the [sockets] key of web.toml
SOCKET_NAME = "http"

log = logging.getLogger("ssdaq.web")

# ---------------------------------------------------------------------------------------- routes


async def get_metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render(request.headers.get("Accept", ""))
    # as a header: content_type= would drop the format's version parameter
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[POLLER].latest().to_json(),
                             headers={"Cache-Control": "no-store"})


def make_app(config: WebConfig, poller: StatusPoller) -> web.Application:
    """The application: every route reads the poller's latest snapshot; none talks to a receiver."""
    app = web.Application()
    app[CONFIG] = config
    app[POLLER] = poller
    app[METRICS] = Metrics(poller, config.expect.data_from)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/api/status", get_status)
    page.add_routes(app)
    return app


# ---------------------------------------------------------------------------------------- sockets


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` -> (ip, port); "" is all addresses."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {text!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {number}")
    return host, number


def listening_socket(ip: str, port: int) -> socket.socket:
    """systemd's ``http`` socket, else one bound to ``ip:port`` ("": dual-stack, else IPv4 only)."""
    source = SocketSource(log)
    if source.inherited and SOCKET_NAME not in source.inherited and "unknown" in source.inherited:
        source.inherited[SOCKET_NAME] = source.inherited.pop("unknown")
    if source.activated or ip:
        sock = source.take(SOCKET_NAME, socket.SOCK_STREAM, ip or "::", port)
        source.close_unused()
        return sock
    try:
        return bind(socket.SOCK_STREAM, "::", port)
    except UnavailableError:  # IPv6 disabled on this host
        return bind(socket.SOCK_STREAM, "0.0.0.0", port)


# ---------------------------------------------------------------------------------------- service


class WebService:
    """Startup -> serve -> shutdown of one ``ssdaq-web`` process, in the receivers' lifecycle
    (:class:`ssdaq.core.lifecycle.Lifecycle`: signals, tasks, exit code)."""

    def __init__(self, config: WebConfig, sock: socket.socket, poller: StatusPoller) -> None:
        self.config, self.sock, self.poller = config, sock, poller
        self.app = make_app(config, poller)
        self.loop = asyncio.new_event_loop()
        self.life = Lifecycle(self.loop, log)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        #: the HTTP connections' limits, as every TCP input's (ssdaq.core.connections)
        self.counters = Counters(log, config.log.rate_limit_interval_s)
        self.counters.declare(STREAM_COUNTERS)
        self.guard = ConnectionGuard(self.loop, self.counters, config.sockets.http, answering)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0) or a task fails (exit 70)."""
        return self.life.run(self.life.serve(
            startup=self._startup, ready=self._ready, drain=self._drain, close=lambda: None,
            reload=self._reload, summary=self.status_text))

    async def _startup(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await asyncio.to_thread(self.poller.poll_once)  # the activating request gets data
        # the runner's protocol factory behind the guard (aiohttp 3.8 never times out a
        # connection that sends no request, or half of one)
        assert self._runner.server is not None
        self._server = await self.loop.create_server(self.guard.wrap(self._runner.server),
                                                     sock=self.sock)
        self.life.spawn("poller", self.poller.run())
        self.life.spawn("status", self._status_loop())
        self.life.spawn("watchdog", self._watchdog_loop())

    def _ready(self) -> None:
        systemd.notify("READY=1", f"STATUS={self.status_text()}")
        log.info("serving http on %s", _where(self.sock))

    async def _drain(self) -> None:
        systemd.notify("STOPPING=1", "STATUS=stopping")
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.guard.close()

    async def _reload(self) -> None:
        log.info("SIGHUP: nothing to reload; restart ssdaq-web to apply a changed %s", CONFIG_FILE)

    def status_text(self) -> str:
        snap = self.poller.latest()
        up = sum(s.reply is not None for s in snap.states)
        text = f"{up}/{len(snap.states)} receivers and writers answering, poll {snap.duration_s * 1e3:.0f} ms"
        closed = ", ".join(f"{self.counters[k]} {k}" for k in STREAM_COUNTERS[1:] if self.counters[k])
        return (text + (f"; poll failed: {snap.error}" if snap.error else "")
                + (f"; connections: {closed}" if closed else ""))

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.counters.flush_reports()
            systemd.notify(f"STATUS={self.status_text()}")

    async def _watchdog_loop(self) -> None:
        """``WATCHDOG=1`` while the loop turns and the poller keeps up (never needs a scrape)."""
        interval = systemd.watchdog_interval_s()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            if self.poller.fresh():
                systemd.notify("WATCHDOG=1")


def answering(handler: asyncio.Protocol) -> bool:
    """Whether an HTTP connection is answering a request (a scrape, a page's WebSocket): its
    client may then be silent as long as it likes. aiohttp 3.8's RequestHandler keeps the request
    it answers in ``_current_request``."""
    return getattr(handler, "_current_request", None) is not None


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="ssdaq-web",
        description="Serve the DAQ's state over HTTP: /metrics for Prometheus (every receiver's "
        "and writer's counters, unit state, modules, disk), /api/status as JSON. Under systemd "
        "the socket comes from ssdaq-web.socket.",
        epilog=f"Configuration: {CONFIG_FILE} unless --config is given (built-in defaults if it "
        "does not exist).",
    )
    p.add_argument("--listen", type=parse_listen, metavar="ADDR:PORT",
                   help="address to bind when started by hand (overrides [sockets.http]); "
                   "':9010' is every address")
    add_daemon_options(p, "web service")
    return p


def load_config(path: Path | None) -> tuple[WebConfig, str | None]:
    if path is None and not CONFIG_FILE.exists():
        return WebConfig(), None
    path = path or CONFIG_FILE
    return configlib.load(WebConfig, path), str(path)


def write_default_configs(directory: Path) -> None:
    configlib.write_overrides(directory, "web", WebConfig(), "`ssdaq-web`")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.write_default_configs:
        write_default_configs(args.write_default_configs)
        return EX_OK
    log_ = sslogging.setup(NAME, args.log_level or "info")
    try:
        config, config_file = load_config(args.config)
        if args.check_config or args.print_config:
            return check_or_print(config, config_file, args.print_config)
        sslogging.setup(NAME, args.log_level or config.log.level)
        ip, port = args.listen or (config.sockets.http.ip, config.sockets.http.port)
        sock = listening_socket(ip, port)
        return WebService(config, sock, StatusPoller(config.poll)).run()
    except SsdaqError as e:
        return startup_failed("ssdaq-web", e, log_, to_stderr=args.check_config or args.print_config)
    except Exception:
        log_.exception("unexpected error")
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
