"""ReadoutAssembler as a real process fed by the TM simulator on loopback.

The event builder's rules are tested exhaustively without sockets in tests/data/; here the whole
path is checked: datagrams from 32 loopback addresses -> batched reader -> builder -> publisher.
"""

import select
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from ssdaq.core.publishers import ZMQTCPPublisher
from ssdaq.data.readout import N_TM_PIX, SSReadout
from ssdaq.receivers.readout_assembler import ReadoutAssembler, ReadoutConfig
from ssdaq.simulators.tm import TMSimConfig, datagram, pattern_mv, simulate, source_address
from tests.callpath import trace
from tests.conftest import free_port
from tests.receivers.conftest import CLASSES, nothing_more, publisher_config, subscribe

CLASSES.setdefault("readout", "ssdaq.receivers.readout_assembler:ReadoutAssembler")
T0 = 1_700_000_000 * 10**9


def config(port: int, pub_port: int, tables: str = "", top: str = "") -> str:
    return (f"start_hold_s = 0.0\n{top}\n[monitor]\nenabled = false\n{tables}\n"
            f'[sockets.data]\nip = "127.0.0.1"\nport = {port}\n' + publisher_config(pub_port))


def collect(sub: zmq.Socket, n: int) -> list[SSReadout]:
    return [SSReadout.from_bytes(sub.recv()) for _ in range(n)]


def test_simulated_camera_round_trip_is_exact(start_receiver, zmq_context) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", config(port, pub_port))
    sub = subscribe(zmq_context, pub_port)
    sim = TMSimConfig(modules=32, rate=50, records_per_packet=10, duration=2.0, tack0=T0)
    before = time.time()
    summary = simulate(sim, "127.0.0.1", port)
    assert summary.records == 32 * sim.readouts
    got = collect(sub, sim.readouts)
    assert nothing_more(sub)
    assert [r.iro for r in got] == list(range(1, sim.readouts + 1))
    for k, r in enumerate(got):
        assert r.time == sim.readout_tack(k)
        expected = pattern_mv(np.arange(32)[:, None], k, np.arange(N_TM_PIX))
        assert np.array_equal(r.data, expected), f"readout {k} differs"
        assert before - 1 < r.cpu_t < time.time() + 1, "CPU time is UTC, near now"
    status = rx.status()
    counters = status["counters"]
    assert counters["complete"] == sim.readouts and counters["incomplete"] == 0
    assert counters["received"] == summary.packets
    # build latency of every complete readout: from its last datagram's arrival to publication,
    # far below max_wait_s (0.5 s), which a readout would wait if completion went unnoticed
    latency = status["latency_ms"]
    assert latency["count"] == sim.readouts
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"] < 200, latency
    sub.close()


def test_bad_input_is_counted_and_publishing_goes_on(start_receiver, zmq_context) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", config(port, pub_port, "[assembler]\nmax_wait_s = 0.2\n"))
    sub = subscribe(zmq_context, pub_port)
    good = datagram(3, [0], [T0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_address(3), 0))
        s.sendto(good[:100], ("127.0.0.1", port))  # not a multiple of 144
        s.sendto(b"", ("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.150", 0))  # slot 50: no such module
        s.sendto(good, ("127.0.0.1", port))
    rx.wait_counter("unknown_source", 1)
    c = rx.status()["counters"]
    assert (c["bad_size"], c["empty"], c["unknown_source"]) == (1, 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_address(3), 0))
        s.sendto(good, ("127.0.0.1", port))
    r = SSReadout.from_bytes(sub.recv())  # published incomplete once max_wait_s passed
    assert r.iro == 1 and r.time == T0 and list(r.modules_present) == [3]
    assert rx.status()["counters"]["incomplete"] == 1
    assert "unknown_source: 1 since last report (total 1)" in rx.stop()
    sub.close()


def test_pause_resume_and_reset_of_readout_numbers(start_receiver, zmq_context) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", config(port, pub_port))
    sub = subscribe(zmq_context, pub_port)
    sim = TMSimConfig(modules=32, rate=100, records_per_packet=10, duration=0.1, tack0=T0)
    assert rx.command("set_publish_readouts false") == "Paused readout publishing"
    simulate(sim, "127.0.0.1", port)
    rx.wait_counter("paused", 10)
    assert nothing_more(sub) and "PAUSED (10 not published)" in rx.status()["status_line"]
    assert rx.command("set_publish_readouts true") == "Unpaused readout publishing"
    simulate(TMSimConfig(modules=32, rate=100, records_per_packet=10, duration=0.1, tack0=T0 + 10**9),
             "127.0.0.1", port)
    assert [r.iro for r in collect(sub, 10)] == list(range(1, 11)), "paused readouts take no numbers"
    assert rx.command("reset_ro_count") == "Readout count reset"
    simulate(TMSimConfig(modules=32, rate=100, records_per_packet=10, duration=0.1, tack0=T0 + 2 * 10**9),
             "127.0.0.1", port)
    assert [r.iro for r in collect(sub, 10)] == list(range(1, 11))
    with pytest.raises(AssertionError, match="expected true or false, got 'maybe'"):
        rx.command("set_publish_readouts maybe")
    sub.close()


def test_stop_publishes_partial_readouts_and_numbers_continue_after_restart(
        start_receiver, zmq_context, tmp_path: Path) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    state = tmp_path / "readout-number"
    cfg = config(port, pub_port, "[assembler]\nmax_wait_s = 30.0\n", top=f'state_file = "{state}"\n')
    rx = start_receiver("readout", cfg)
    sub = subscribe(zmq_context, pub_port)
    # 31 of 32 modules: every readout waits for the last one (it is not yet timed out)
    simulate(TMSimConfig(modules=31, rate=100, records_per_packet=10, duration=0.1, tack0=T0),
             "127.0.0.1", port)
    rx.wait_counter("received", 31)
    assert nothing_more(sub, 0.5), "nothing is complete yet"
    rx.stop()
    partial = collect(sub, 10)
    assert [r.iro for r in partial] == list(range(1, 11))
    assert all(len(r.modules_present) == 31 for r in partial)
    assert state.read_text().strip() == "11"
    rx2 = start_receiver("readout", cfg)
    sub2 = subscribe(zmq_context, pub_port)
    simulate(TMSimConfig(modules=32, rate=100, records_per_packet=10, duration=0.1, tack0=T0 + 10**9),
             "127.0.0.1", port)
    assert [r.iro for r in collect(sub2, 10)] == list(range(11, 21))
    rx2.stop()
    sub.close()
    sub2.close()


def test_ipv6_senders_are_mapped_by_the_modules_table(start_receiver, zmq_context) -> None:
    """An IPv6 socket and a [modules] table: the sender's address picks the slot, and a readout
    waits only for the modules listed."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine: {e}")
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", f'start_hold_s = 0.0\n[monitor]\nenabled = false\n'
                        f'[modules]\n"::1" = 7\n[sockets.data]\nip = "::1"\nport = {port}\n'
                        + publisher_config(pub_port))
    sub = subscribe(zmq_context, pub_port)
    before = time.time()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.sendto(datagram(7, [0, 1], [T0, T0 + 10**8]), ("::1", port))
    got = collect(sub, 2)
    assert [r.time for r in got] == [T0, T0 + 10**8]
    for k, r in enumerate(got):
        assert list(r.modules_present) == [7]
        assert np.array_equal(r.data[7], pattern_mv(7, k, np.arange(N_TM_PIX)))
        assert before - 1 < r.cpu_t < time.time() + 1
    status = rx.status()
    assert status["counters"]["complete"] == 2 and status["counters"]["unknown_source"] == 0
    assert status["modules"]["7"]["packets"] == 1
    sub.close()


def test_a_silent_module_is_marked_absent_and_not_waited_for(start_receiver, zmq_context) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    rx = start_receiver("readout", config(port, pub_port, "[assembler]\nmodule_timeout_s = 0.5\n"
                                                          "max_wait_s = 30.0\n"))
    sub = subscribe(zmq_context, pub_port)
    time.sleep(1.0)  # nothing sent yet: every module is absent once 0.5 s passed
    assert rx.status()["absent_modules"] == list(range(32))
    # 31 modules for 3 s; module 31 stays silent
    sender = threading.Thread(target=simulate, args=(
        TMSimConfig(modules=31, rate=100, records_per_packet=10, duration=3.0, tack0=T0), "127.0.0.1", port))
    sender.start()
    t0 = time.monotonic()
    got = collect(sub, 10)
    assert time.monotonic() - t0 < 5, "readouts must not wait 30 s for an absent module"
    assert [list(r.modules_present) for r in got] == [list(range(31))] * 10
    time.sleep(0.5)
    status = rx.status()
    assert status["absent_modules"] == [31]
    assert "31/32 TMs" in status["status_line"]
    sender.join()
    log = rx.stop()
    # one record per change, naming every module it is about (the journal repeats SSDAQ_MODULE)
    assert log.count(" absent (silent for 0.5 s)") == 1, log
    assert "modules 0-31 absent" in log and log.count("sending again") == 1
    assert "modules 0-30 sending again" in log
    sub.close()


def test_old_constructor_keywords_map_onto_the_settings(runtime_dir: Path) -> None:
    rx = ReadoutAssembler(relaxed_ip_range=True, readout_tw=5.1e7, listen_ip="127.0.0.1", listen_port=0,
                          buffer_length=100, buffer_time=2e9, publishers=[])
    try:
        a = rx.config.assembler
        assert isinstance(rx.config, ReadoutConfig)
        assert (a.relaxed_ip_range, a.readout_window_ns, a.max_open_readouts, a.max_wait_s) == \
            (True, 51_000_000, 100, 2.0)
        assert (rx.config.sockets.data.ip, rx.config.sockets.data.port) == ("127.0.0.1", 0)
    finally:
        rx.reader.close()
        rx.release()
        rx.loop.close()


def _queued(sock: socket.socket) -> None:
    """Wait until what was sent to ``sock`` on loopback is readable."""
    assert select.select([sock], [], [], 5.0)[0]
    time.sleep(0.05)  # loopback delivers at once; a margin for the last datagrams


def test_one_batch_goes_down_the_path_and_comes_back_up_once(runtime_dir: Path) -> None:
    """Calls go down, results come back: no file on the path calls into a file that called it,
    and each file is entered from one caller file only (the files of a batch form a tree)."""
    pub = ZMQTCPPublisher("127.0.0.1", free_port(socket.SOCK_STREAM))
    rx = ReadoutAssembler(listen_ip="127.0.0.1", listen_port=0, publishers=[pub])
    port = rx.reader.sock.getsockname()[1]

    def send(*readouts: int, bad: bool = False) -> None:
        for m in range(32):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((source_address(m), 0))
                for k in readouts:
                    s.sendto(datagram(m, [k], [T0 + k * 10**8]), ("127.0.0.1", port))
                if bad and m == 3:
                    s.sendto(b"x" * 100, ("127.0.0.1", port))
        _queued(rx.reader.sock)

    try:
        send(0, 1)
        rx.reader._on_readable()  # the first readouts: ``ref`` and the history are set up
        send(2, 1, bad=True)  # readout 2, a copy of readout 1 (duplicate), a bad datagram
        path = trace(rx.reader._on_readable)
        c = rx.counters
        assert (c["complete"], c["duplicate"], c["bad_size"], rx.numbers.next) == (3, 32, 1, 4)
    finally:
        rx.reader.close()
        rx.release()
        rx.loop.close()
    print("readout path:", " -> ".join(path.visits))
    assert path.callbacks == []
    assert {f: callers for f, callers in path.callers().items() if len(callers) > 1} == {}
    assert path.files[:3] == ["core/datagrams.py", "receivers/readout_assembler.py", "data/readout_pipeline.py"]
    data = {f for f in path.files if f.startswith("data/")}
    assert data == {"data/readout_pipeline.py", "data/slowsignal.py", "data/event_builder.py",
                    "data/tack_match.py", "data/readout_rows.py", "data/module_presence.py"}
    # the receiver hands the data part to the pipeline alone
    assert {callee for caller, callee in path.calls
            if caller.startswith("receivers/")} & data == {"data/readout_pipeline.py"}
