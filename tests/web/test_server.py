"""ssdaq-web as a service: socket activation, sd_notify, formats, and what it refuses."""

import asyncio
import json
import resource
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from ssdaq.core.errors import EX_UNAVAILABLE
from tests.conftest import child_env, ctl_argv, free_port, stop
from tests.core.test_receiver_server import activate
from tests.daemons import Daemon, NotifyDrain
from tests.sdnotify import NotifyListener
from tests.web.conftest import BY_HAND, QUIET_RECEIVER, Web, get, raw, web_argv


def trigger_config(port: int) -> str:
    return (QUIET_RECEIVER + f'[[publishers]]\nip = "127.0.0.1"\nport = {free_port(socket.SOCK_STREAM)}\n'
            f'[sockets.data]\nip = "127.0.0.1"\nport = {port}\n')


def test_socket_activated_the_first_request_is_answered_with_the_running_receivers(
        tmp_path: Path, runtime_dir: Path, notify: NotifyListener, notified: NotifyDrain,
        start_receiver: Callable[..., Daemon]) -> None:
    start_receiver("trigger", trigger_config(free_port()))
    (tmp_path / "web.toml").write_text(BY_HAND)
    port = free_port(socket.SOCK_STREAM)
    proc = activate(notify, [f"127.0.0.1:{port}"], ["http"],
                    web_argv("--config", str(tmp_path / "web.toml")), datagram=False,
                    watchdog_usec=1_000_000)
    try:
        first = get(f"http://127.0.0.1:{port}/metrics", timeout=20)  # starts the service
        assert first.status == 200
        assert 'ssdaq_up{receiver="trigger"} 1.0' in first.body.decode()
        assert 'ssdaq_up{receiver="readout"} 0.0' in first.body.decode()  # known, not running
        notified.wait_for("READY", "1", proc.pid)  # from the service's own PID
        notified.wait_for("STATUS", "1/9 receivers and writers answering", proc.pid, part=True)
        notified.wait_for("WATCHDOG", "1", proc.pid)
        proc.send_signal(signal.SIGTERM)
        notified.wait_for("STOPPING", "1", proc.pid)
        assert stop(proc) == 0
    finally:
        stop(proc)


def test_metrics_are_prometheus_text_or_openmetrics_as_the_scraper_asks(
        start_web: Callable[..., Web]) -> None:
    web = start_web()
    text = get(web.url + "/metrics")
    assert text.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE ssdaq_up gauge" in text.body.decode()
    om = get(web.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    # prometheus_client 0.16 (Debian 12's) labels its OpenMetrics 1.0 output version=0.0.1
    assert om.headers["Content-Type"].startswith("application/openmetrics-text; version=")
    assert om.body.endswith(b"# EOF\n") and b"# TYPE ssdaq_web_polls counter" in om.body


def test_unknown_paths_are_404_and_methods_other_than_get_and_head_405(
        start_web: Callable[..., Web]) -> None:
    web = start_web()
    assert get(web.url + "/nope").status == 404
    assert get(web.url + "/metrics/x").status == 404
    head = get(web.url + "/metrics", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        reply = get(web.url + "/api/status", method=method)
        assert reply.status == 405 and reply.headers["Allow"] == "GET,HEAD"


def test_oversized_and_malformed_requests_are_refused(start_web: Callable[..., Web]) -> None:
    web = start_web()
    long_line = b"GET /metrics?" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    big_header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n"
    for request in (long_line, big_header, b"NOT HTTP AT ALL\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
        assert raw(web.port, request).split(b" ", 2)[1] == b"400", request[:40]
    assert get(web.url + "/metrics").status == 200  # and it still serves


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def scrapes(url: str, concurrent: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
        async def one() -> int:
            async with s.get(url) as r:
                await r.read()
                return r.status
        return await asyncio.gather(*(one() for _ in range(concurrent)))


def test_thousands_of_concurrent_scrapes_do_not_grow_memory_without_bound(
        start_web: Callable[..., Web]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    # a thousand at once from one address: above the connection limits, which are tested apart
    web = start_web(BY_HAND + "[sockets.http]\nmax_connections = 2000\nmax_connections_per_peer = 2000\n")
    rounds = []
    for _ in range(6):
        statuses = asyncio.run(scrapes(web.url + "/metrics", 1000))
        assert statuses == [200] * 1000
        rounds.append(rss_kb(web.pid))
    # The first rounds grow the heap to what 1000 connections need, later ones reuse it (give
    # or take the allocator's few MB): a leak of 2.5 kB a scrape would add 10 MB.
    assert max(rounds[3:]) - min(rounds[1:3]) < 10_000, f"RSS after each round (kB): {rounds}"


def test_an_address_in_use_exits_69_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(web_argv("--listen", f"127.0.0.1:{port}"), capture_output=True,
                              text=True, env=child_env(), timeout=30)
    assert done.returncode == EX_UNAVAILABLE
    assert f"cannot bind stream (TCP) 127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize("listen", ["9010x", "host:0", "host:70000", "nocolon"])
def test_a_bad_listen_address_is_a_usage_error(listen: str) -> None:
    done = subprocess.run(web_argv("--listen", listen), capture_output=True, text=True,
                          env=child_env(), timeout=30)
    assert done.returncode == 64 and "--listen" in done.stderr


def test_api_status_is_what_ssdaqctl_status_json_prints(
        start_web: Callable[..., Web], start_receiver: Callable[..., Daemon]) -> None:
    start_receiver("trigger", trigger_config(free_port()))
    web = start_web()
    reply = get(web.url + "/api/status")
    assert reply.headers["Content-Type"].startswith("application/json")
    ours = json.loads(reply.body)
    ctl = json.loads(subprocess.run(ctl_argv("status", "--json"), capture_output=True, text=True,
                                    env=child_env(), timeout=30).stdout)
    assert set(ours) == set(ctl) | {"taken_unix", "age_s"} and 0 <= ours["age_s"] < 2
    by_name = {r["name"]: r for r in ours["receivers"]}
    assert [r["name"] for r in ours["receivers"]] == [r["name"] for r in ctl["receivers"]]
    assert all(set(r) == set(by_name[r["name"]]) for r in ctl["receivers"])
    assert by_name["trigger"]["status"]["counters"]["received"] == 0
    assert by_name["readout"]["running"] is False
