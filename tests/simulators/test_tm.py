"""The TM simulator over loopback: decoded by the assembler's own decoder, it gives the pattern."""

import json
import socket
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from ssdaq.data.assembler_settings import AssemblerSettings
from ssdaq.data.event_builder import EventBuilder
from ssdaq.data.readout_rows import Published
from ssdaq.data.slowsignal import ModuleMap, RecordBatch, decode, to_batch
from ssdaq.simulators import cli
from ssdaq.simulators.tm import RESET_TACK0, TMSimConfig, pattern_counts, pattern_mv, simulate

T0 = 1_750_000_000 * 10**9
CH = np.arange(64)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def received(sock: socket.socket) -> tuple[list[bytes], list[str]]:
    """Everything queued on ``sock``: the simulator has returned, so it is all there."""
    sock.setblocking(False)
    datagrams, senders = [], []
    while True:
        try:
            data, (host, _) = sock.recvfrom(65536)
        except BlockingIOError:
            return datagrams, senders
        datagrams.append(data)
        senders.append(host)


def run(cfg: TMSimConfig, sock: socket.socket) -> tuple[RecordBatch, list[str]]:
    summary = simulate(cfg, "127.0.0.1", sock.getsockname()[1])
    datagrams, senders = received(sock)
    assert summary.packets == len(datagrams) and summary.send_errors == 0
    assert summary.records == len(datagrams) * cfg.records_per_packet
    batch = decode(*to_batch(datagrams), senders, ModuleMap())
    assert batch.rejected == {}
    return batch, senders


def readout_index(cfg: TMSimConfig, tack: np.ndarray) -> np.ndarray:
    return np.rint((tack - cfg.tack0) / cfg.period_ns).astype(int)


def test_each_module_sends_from_its_own_address_and_the_values_are_the_pattern(listener):
    cfg = TMSimConfig(modules=32, rate=200, records_per_packet=10, duration=0.1, tack0=T0)
    batch, senders = run(cfg, listener)
    assert Counter(senders) == {f"127.0.0.{100 + m}": 2 for m in range(32)}
    k = readout_index(cfg, batch.tack)
    assert (batch.tack == cfg.tack0 + k * cfg.period_ns).all()
    assert sorted(zip(batch.slot.tolist(), k.tolist())) == [(m, i) for m in range(32)
                                                             for i in range(20)]
    assert (batch.mv() == pattern_mv(batch.slot[:, None], k[:, None], CH)).all()


def test_pattern_counts_are_distinct_across_modules_readouts_and_channels():
    counts = pattern_counts(np.arange(32)[:, None, None], np.arange(3)[:, None], CH)
    assert counts.shape == (32, 3, 64)
    assert len(np.unique(counts[:, 0, :])) > 1000 and (counts[:, 0] != counts[:, 1]).all()


def test_jitter_moves_each_tack_by_at_most_the_bound(listener):
    cfg = TMSimConfig(modules=8, rate=100, duration=0.1, tack0=T0, jitter_ns=5000, seed=3)
    batch, _ = run(cfg, listener)
    k = readout_index(cfg, batch.tack)
    off = batch.tack - (cfg.tack0 + k * cfg.period_ns)
    assert np.abs(off).max() <= 5000 and len(np.unique(off)) > 10
    assert (batch.mv() == pattern_mv(batch.slot[:, None], k[:, None], CH)).all()


def test_reset_restarts_the_tack_counter_and_keeps_the_readout_index(listener):
    cfg = TMSimConfig(modules=2, rate=100, duration=0.2, tack0=T0, reset_at=0.05)
    assert cfg.reset_readout == 5
    batch, _ = run(cfg, listener)
    after = batch.tack < T0
    k = np.where(after, (batch.tack - RESET_TACK0) // cfg.period_ns + 5,
                 readout_index(cfg, batch.tack))
    assert sorted(set(k[after].tolist())) == list(range(5, 20))
    assert (batch.mv() == pattern_mv(batch.slot[:, None], k[:, None], CH)).all()


def test_faults_are_applied_and_counted(listener):
    cfg = TMSimConfig(modules=16, rate=500, duration=0.2, tack0=T0, loss=0.2, late=0.2,
                      late_delay=0.05, duplicate=0.2, seed=7)
    summary = simulate(cfg, "127.0.0.1", listener.getsockname()[1])
    datagrams, senders = received(listener)
    packets = cfg.modules * cfg.packets_per_module
    assert summary.lost and summary.late and summary.duplicated
    assert summary.packets == len(datagrams) == packets - summary.lost + summary.duplicated
    batch = decode(*to_batch(datagrams), senders, ModuleMap())
    first_tack = batch.tack[np.r_[0, np.cumsum([len(d) // 144 for d in datagrams])[:-1]]]
    distinct = Counter(zip(batch.datagram_slot.tolist(), first_tack.tolist()))
    assert len(distinct) == packets - summary.lost
    assert sum(n - 1 for n in distinct.values()) == summary.duplicated


def test_late_packets_arrive_after_later_ones(listener):
    cfg = TMSimConfig(modules=1, rate=1000, duration=0.05, tack0=T0, late=1.0, late_delay=0.2)
    batch, _ = run(cfg, listener)
    assert batch.tack.tolist() == sorted(batch.tack.tolist())  # held, then sent in order
    cfg = TMSimConfig(modules=4, rate=1000, duration=0.05, tack0=T0, late=0.5, late_delay=0.02,
                      seed=1)
    batch, _ = run(cfg, listener)
    assert batch.tack.tolist() != sorted(batch.tack.tolist())


def test_simulated_camera_builds_complete_readouts_of_the_pattern(listener):
    cfg = TMSimConfig(modules=32, rate=1000, duration=0.05, tack0=T0)
    batch, _ = run(cfg, listener)
    b = EventBuilder(AssemblerSettings(readout_window_ns=100_000), now=0.0)
    pub = Published.concat([b.add(batch, 0.1, 10**18), b.flush()])
    assert len(pub) == cfg.readouts and pub.complete.all()
    k = readout_index(cfg, pub.header[:, 1].astype(np.int64))
    assert k.tolist() == list(range(cfg.readouts))
    expected = pattern_mv(np.arange(32)[None, :, None], k[:, None, None], CH)
    assert (pub.data == expected).all()


def test_paced_run_keeps_to_its_schedule(listener):
    cfg = TMSimConfig(modules=4, rate=2000, duration=0.3, tack0=T0)
    summary = simulate(cfg, "127.0.0.1", listener.getsockname()[1])
    assert summary.readouts == 600 and summary.packets == 4 * 60
    assert 0.3 <= summary.elapsed_s < 3.0  # never ahead of the schedule


def test_a_stopped_module_sends_until_its_time_and_then_nothing(listener):
    port = str(listener.getsockname()[1])
    # 100 readouts/s, 1 record per packet: 20 packets per module, module 1 stops after 0.1 s
    assert cli.main(["tm", "--modules", "3", "--rate", "100", "--records-per-packet", "1",
                     "--duration", "0.2", "--port", port, "--stop-module", "1", "--at", "0.1"]) == 0
    senders = Counter(received(listener)[1])
    assert senders == {"127.0.0.100": 20, "127.0.0.101": 10, "127.0.0.102": 20}


def test_cli_prints_one_json_summary_line(listener, capsys):
    port = str(listener.getsockname()[1])
    assert cli.main(["tm", "--modules", "3", "--rate", "100", "--duration", "0.1", "--port",
                     port, "--tack0", str(T0), "--duplicate", "1", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert summary["packets"] == 6 and summary["duplicated"] == 3 and summary["tack0"] == T0
    assert len(received(listener)[0]) == 6


def test_cli_prints_a_readable_summary_line(listener, capsys):
    cli.main(["tm", "--modules", "2", "--rate", "100", "--duration", "0.1",
              "--port", str(listener.getsockname()[1])])
    assert capsys.readouterr().out.startswith("tm: 10 readouts x 2 modules in ")


@pytest.mark.parametrize("argv", [
    ["tm", "--rate", "0"], ["tm", "--loss", "1.5"], ["tm", "--modules", "33"],
    ["tm", "--records-per-packet", "11"], ["tm", "--stop-module", "32"], ["nosuch"], [],
])
def test_cli_rejects_a_bad_command_line_with_usage_exit_code(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 64
    assert "error" in capsys.readouterr().err
