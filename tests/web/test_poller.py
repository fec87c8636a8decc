"""The shared poll: only `status` is sent, at most once a second, bounded by its timeout."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from ssdaq.web.config import PollSettings
from ssdaq.web.metrics import Metrics
from ssdaq.web.poller import RefusedCommand, StatusPoller, send
from tests.web.conftest import Web, get

BY_HAND = PollSettings(units="none")


class CommandSocket:
    """A command socket in the runtime directory that records what it is sent.

    ``answer`` False plays a hung receiver: the request is read and never answered.
    """

    def __init__(self, runtime: Path, name: str, answer: bool = True) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.bind(f"ipc://{runtime / name}.ctl")
        self.answer, self.received = answer, []
        self.peers: list[bytes] = []  # the ROUTER's identity of each request's connection
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            if not self.sock.poll(50):
                continue
            *envelope, body = self.sock.recv_multipart()
            self.received.append(body.decode())
            self.peers.append(envelope[0])
            if self.answer:
                reply = {"ok": True, "result": {"health": "ok", "counters": {"received": 7}}}
                self.sock.send_multipart([*envelope, json.dumps(reply).encode()])

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def command_socket(runtime_dir: Path) -> Iterator[Callable[..., CommandSocket]]:
    made: list[CommandSocket] = []

    def make(name: str, answer: bool = True) -> CommandSocket:
        made.append(CommandSocket(runtime_dir, name, answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def new_poller() -> Iterator[Callable[[PollSettings], StatusPoller]]:
    """StatusPollers that close their kept connections when the test ends."""
    made: list[StatusPoller] = []

    def make(settings: PollSettings = BY_HAND) -> StatusPoller:
        made.append(StatusPoller(settings))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_only_status_is_ever_sent(runtime_dir: Path, command_socket: Callable[..., CommandSocket],
                                  new_poller: Callable[[PollSettings], StatusPoller]) -> None:
    recorder = command_socket("site")
    for line in ("reset_ro_count", "pause", "reload", "status; reset", "", "  "):
        with pytest.raises(RefusedCommand):
            send(str(runtime_dir / "site.ctl"), line, 0.5)
    poller = new_poller(BY_HAND)
    for _ in range(3):
        poller.poll_once()
    assert recorder.received == ["status"] * 3
    assert {s.name: s.reply for s in poller.latest().states}["site"]["counters"] == {"received": 7}


def test_one_connection_per_receiver_is_kept_and_one_that_timed_out_is_made_again(
        runtime_dir: Path, command_socket: Callable[..., CommandSocket],
        new_poller: Callable[[PollSettings], StatusPoller]) -> None:
    recorder = command_socket("site")
    poller = new_poller(PollSettings(units="none", timeout_s=0.3))
    for _ in range(3):
        poller.poll_once()
    assert len(recorder.peers) == 3 and len(set(recorder.peers)) == 1
    recorder.answer = False
    assert poller.poll_once().no_answers["site"] == 1
    recorder.answer = True
    snap = poller.poll_once()
    assert {s.name: s.reply for s in snap.states}["site"] is not None
    assert len(set(recorder.peers)) == 2, "the connection left waiting for a reply is replaced"


def test_a_hung_receiver_is_down_in_bounded_time_and_a_scrape_does_not_wait(
        runtime_dir: Path, command_socket: Callable[..., CommandSocket],
        start_web: Callable[..., Web], new_poller: Callable[[PollSettings], StatusPoller]) -> None:
    command_socket("hung", answer=False)
    command_socket("fine")
    poller = new_poller(BY_HAND)
    snap = poller.poll_once()
    assert snap.duration_s < BY_HAND.timeout_s + 0.3  # in parallel, each bounded
    states = {s.name: s for s in snap.states}
    assert states["hung"].reply is None and "no answer" in (states["hung"].error or "")
    assert states["fine"].reply is not None
    assert snap.no_answers["hung"] == 1 and snap.no_answers["fine"] == 0

    web = start_web()
    started = time.monotonic()
    body = get(web.url + "/metrics").body.decode()
    assert time.monotonic() - started < 0.2
    assert 'ssdaq_up{receiver="hung"} 0.0' in body and 'ssdaq_up{receiver="fine"} 1.0' in body
    assert 'ssdaq_received_total{receiver="fine"} 7.0' in body
    hung = {line.split("{")[0] for line in body.splitlines() if 'receiver="hung"' in line}
    assert hung == {"ssdaq_up", "ssdaq_unit_state", "ssdaq_data_expected",
                    "ssdaq_web_poll_no_answers_total"}  # what is known without an answer
    assert 'ssdaq_unit_state{receiver="hung",state="active"} 1.0' in body  # it should be running


def test_many_scrapes_cost_each_receiver_at_most_one_poll_a_second(
        command_socket: Callable[..., CommandSocket], start_web: Callable[..., Web]) -> None:
    recorder = command_socket("counted")
    web = start_web()
    started = time.monotonic()
    before = len(recorder.received)
    scrapes = 0
    while time.monotonic() - started < 3.0:
        assert get(web.url + "/metrics").status == 200
        scrapes += 1
    polls = len(recorder.received) - before
    assert scrapes > 50 and polls <= 4, (scrapes, polls)


def test_a_stale_snapshot_exports_no_counter_as_fresh(
        command_socket: Callable[..., CommandSocket],
        new_poller: Callable[[PollSettings], StatusPoller]) -> None:
    command_socket("counted")
    poller = new_poller(PollSettings(units="none", stale_after_s=2.0))
    poller.poll_once()
    metrics = Metrics(poller)
    fresh = metrics.render("")[0].decode()
    assert 'ssdaq_up{receiver="counted"} 1.0' in fresh and "ssdaq_received_total" in fresh
    time.sleep(2.1)  # the poll stalls: nothing new is known
    stale = metrics.render("")[0].decode()
    assert 'ssdaq_up{receiver="counted"} 0.0' in stale and "ssdaq_received_total" not in stale
