"""TM slow-signal simulator: up to 32 TARGET modules sending the camera's datagrams over loopback.

Module i sends from its own address 127.0.0.(100 + i), as the camera is wired (all of 127/8 is
loopback on Linux), so the assembler's default address -> slot rule applies unchanged. Readouts
are ``1/rate`` apart in TACK, shared by all modules (plus optional jitter); each module sends one
datagram per ``records_per_packet`` readouts, paced against an absolute schedule (no drift).
Amplitudes follow ``pattern_counts``, so a test can recompute every published value exactly.
``--loss``, ``--late``, ``--duplicate``, ``--jitter-ns`` and ``--reset-at`` inject the faults the
assembler must survive; one summary line (or ``--json``) says what was sent.
"""

import argparse
import collections
import ctypes
import json
import math
import socket
import struct
import time
from dataclasses import asdict, dataclass

import numpy as np

from ssdaq import streams
from ssdaq.core import mmsg
from ssdaq.core.cli import add_settings, settings_from
from ssdaq.core.config import setting
from ssdaq.data.readout import N_TM, N_TM_PIX
from ssdaq.data.slowsignal import ADC_SIGN, MV_PER_COUNT, RECORD_BYTES, RECORD_DTYPE, encode_records

NAME = "tm"
SOURCE_BASE = "127.0.0."
SOURCE_OFFSET = 100  # module i sends from 127.0.0.(100 + i)
RESET_TACK0 = 1_000_000  # where the TACK counter restarts after --reset-at (ns)
_PATTERN_MASK = 8191  # counts stay in 4096..12287: well inside the ADC range
_PATTERN_OFFSET = 4096


def pattern_counts(module: np.ndarray | int, readout: np.ndarray | int,
                   channel: np.ndarray | int) -> np.ndarray:
    """ADC counts (the word XOR 0x8000) the simulator sends; arguments broadcast."""
    m, r, c = (np.asarray(a, np.int64) for a in (module, readout, channel))
    return ((m * 997 + r * 31 + c * 113) % (_PATTERN_MASK + 1) + _PATTERN_OFFSET).astype(np.uint16)


def pattern_mv(module: np.ndarray | int, readout: np.ndarray | int,
               channel: np.ndarray | int) -> np.ndarray:
    """``pattern_counts`` in mV, exactly as the assembler converts them."""
    return pattern_counts(module, readout, channel) * MV_PER_COUNT


def datagram(module: int, readouts: np.ndarray | list[int], tack: np.ndarray | list[int]) -> bytes:
    """What ``module`` sends for readout indices ``readouts`` stamped ``tack`` (one per record)."""
    counts = pattern_counts(module, np.asarray(readouts)[:, None], np.arange(N_TM_PIX))
    return encode_records(np.asarray(tack, np.uint64), counts ^ np.uint16(ADC_SIGN)).tobytes()


@dataclass(frozen=True)
class TMSimConfig:
    """What to send; ``readout_tack`` and ``pattern_counts`` say what a receiver must get."""

    modules: int = setting(N_TM, help="modules sending, as slots 0..N-1", min=1, max=N_TM)
    rate: float = setting(10.0, help="readouts/s", min=1e-3)
    records_per_packet: int = setting(10, help="records per datagram (10 fills a 1500 B MTU)",
                                      min=1, max=10)
    duration: float = setting(10.0, help="seconds to send for", min=1e-3)
    tack0: int = setting(0, help="TACK of readout 0, ns (default: now, UTC, whole second)", min=0)
    jitter_ns: int = setting(0, help="each record's TACK off by up to +-J ns", min=0)
    loss: float = setting(0.0, help="drop a packet with this probability", min=0.0, max=1.0)
    late: float = setting(0.0, help="hold a packet back by --late-delay with this probability",
                          min=0.0, max=1.0)
    late_delay: float = setting(1.0, help="seconds a late packet is held back", min=0.0)
    duplicate: float = setting(0.0, help="send a packet twice with this probability", min=0.0,
                               max=1.0)
    reset_at: float | None = setting(
        None, help=f"restart the TACK counter (at {RESET_TACK0} ns) this many seconds in", min=0.0)
    stop_module: int | None = setting(None, help="this module (slot) stops sending --at seconds in",
                                      min=0, max=N_TM - 1)
    at: float = setting(0.0, help="seconds in when --stop-module stops (0: it never sends)", min=0.0)
    seed: int = setting(0, help="seed of the fault injection's random numbers")

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate)

    @property
    def packets_per_module(self) -> int:
        return max(1, math.floor(self.duration * self.rate / self.records_per_packet))

    @property
    def readouts(self) -> int:
        return self.packets_per_module * self.records_per_packet

    @property
    def reset_readout(self) -> int | None:
        """Index of the first readout after the TACK counter reset, if any."""
        return None if self.reset_at is None else math.ceil(self.reset_at * self.rate)

    def readout_tack(self, readout: np.ndarray | int) -> np.ndarray:
        """TACK (ns, before jitter) of readout index ``readout``."""
        k = np.asarray(readout, np.int64)
        tack = self.tack0 + k * self.period_ns
        if self.reset_readout is not None:
            after = RESET_TACK0 + (k - self.reset_readout) * self.period_ns
            tack = np.where(k >= self.reset_readout, after, tack)
        return tack


@dataclass
class TMSimSummary:
    """What was sent; ``lost`` / ``late`` / ``duplicated`` count packets hit by each fault.

    In records, what a receiver must count: ``late_records`` (sent ``late_delay`` after their
    group, so after their readout was published when that exceeds its wait) and
    ``duplicated_records``; ``incomplete_readouts`` is how many readouts lacked at least one
    module's record when their group was sent (a lost or late packet).
    """

    modules: int
    readouts: int
    packets: int = 0
    records: int = 0
    lost: int = 0
    late: int = 0
    duplicated: int = 0
    late_records: int = 0
    duplicated_records: int = 0
    incomplete_readouts: int = 0
    send_errors: int = 0
    elapsed_s: float = 0.0
    tack0: int = 0
    reset_readout: int | None = None

    def line(self) -> str:
        rate = self.readouts / self.elapsed_s if self.elapsed_s else 0.0
        return (f"tm: {self.readouts} readouts x {self.modules} modules in {self.elapsed_s:.2f} s"
                f" ({rate:.1f} readouts/s): sent {self.packets} packets, {self.records} records;"
                f" lost {self.lost}, late {self.late}, duplicated {self.duplicated},"
                f" send errors {self.send_errors}")


class Packets:
    """Builds one packet group (a datagram per module) at a time into one reused buffer; the
    benchmark uses it to make the same bytes without sockets."""

    def __init__(self, cfg: TMSimConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.faulty = bool(cfg.loss or cfg.late or cfg.duplicate)
        # pattern_counts split as (module, channel) part + readout part, in uint16 arithmetic.
        mods, chans = np.arange(cfg.modules)[:, None, None], np.arange(N_TM_PIX)
        self.base = ((mods * 997 + chans * 113) & _PATTERN_MASK).astype(np.uint16)
        n = cfg.records_per_packet
        self.records = np.zeros((cfg.modules, n), RECORD_DTYPE)
        self.data = self.records.view(np.uint8).reshape(cfg.modules, n * RECORD_BYTES)
        # Reused scratch for one group's counts: no allocation per group (the simulator must
        # outrun the assembler several times over on one core).
        self._counts = np.empty((cfg.modules, n, N_TM_PIX), np.uint16)
        self._within = np.arange(n)

    def group_counts(self, g: int) -> np.ndarray:
        """``pattern_counts`` of every (module, readout, channel) of group ``g`` (valid until
        the next call)."""
        n = self.cfg.records_per_packet
        k = np.arange(g * n, (g + 1) * n)
        counts = np.add(self.base, ((k * 31) & _PATTERN_MASK).astype(np.uint16)[:, None],
                        out=self._counts)
        counts &= _PATTERN_MASK
        counts += _PATTERN_OFFSET
        return counts

    def group(self, g: int, wall_ns: int) -> np.ndarray:
        """Datagrams of packet group ``g`` as rows of a uint8 array (valid until the next call)."""
        cfg = self.cfg
        n = cfg.records_per_packet
        tack = cfg.readout_tack(self._within + g * n)
        if cfg.jitter_ns:
            tack = tack + self.rng.integers(-cfg.jitter_ns, cfg.jitter_ns + 1, (cfg.modules, n))
        counts = self.group_counts(g)
        counts ^= ADC_SIGN
        stamp2 = wall_ns - (n - 1 - self._within) * cfg.period_ns
        encode_records(tack, counts, stamp2, out=self.records)
        return self.data

    def faults(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """One group's modules: (to send, in order with repeats; lost; late; duplicated)."""
        modules = list(range(self.cfg.modules))
        if not self.faulty:
            return modules, [], [], []
        cfg = self.cfg
        u = self.rng.random((cfg.modules, 3)).tolist()
        lost = [m for m in modules if u[m][0] < cfg.loss]
        late = [m for m in modules if u[m][0] >= cfg.loss and u[m][1] < cfg.late]
        gone = set(lost) | set(late)
        dup = [m for m in modules if m not in gone and u[m][2] < cfg.duplicate]
        send = sorted([m for m in modules if m not in gone] + dup)
        return send, lost, late, dup


class ModuleSender:
    """Sends datagrams as modules 127.0.0.(100 + i), many per system call: row ``r`` of ``data``
    from module ``r % modules`` (a benchmark sends many groups from one buffer).

    One socket with ``sendmmsg(2)`` (through ctypes) and an ``IP_PKTINFO`` source address per
    message: a datagram costs about a third less CPU than one ``sendto`` per module socket, which
    is what lets a single simulator process load the assembler well past 10 000 readouts/s.
    ``data`` holds one datagram per module for :meth:`send` (each module's row, reused);
    :meth:`send_copy` sends any bytes as any module (the replay sends only with it).
    """

    def __init__(self, modules: int, dest: tuple[str, int],
                 data: np.ndarray | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dest, self.data = dest, data
        self._name = ctypes.create_string_buffer(
            struct.pack("=HH4s8x", socket.AF_INET, socket.htons(dest[1]),
                        socket.inet_aton(socket.gethostbyname(dest[0])))
        )
        self.pktinfo = [struct.pack("@i4s4x", 0, socket.inet_aton(source_address(m)))
                        for m in range(modules)]
        self._control = [ctypes.create_string_buffer(_cmsg(info)) for info in self.pktinfo]
        self._iov, self.msgs = mmsg.headers(np.zeros((0, 1), np.uint8) if data is None else data)
        for r, msg in enumerate(self.msgs):
            h, control = msg.msg_hdr, self._control[r % modules]
            h.msg_name, h.msg_namelen = ctypes.addressof(self._name), _SOCKADDR_IN_BYTES
            h.msg_control, h.msg_controllen = ctypes.addressof(control), len(control)

    def close(self) -> None:
        self.sock.close()

    def send(self, modules: list[int]) -> int:
        """Send the current datagram of each listed module; return how many failed."""
        if modules == list(range(len(self.msgs))):
            msgs = self.msgs
        else:
            msgs = (mmsg.MMsgHdr * len(modules))(*(self.msgs[m] for m in modules))
        return mmsg.send_all(self.sock.fileno(), msgs, len(msgs))

    def send_copy(self, module: int, payload: bytes) -> bool:
        """Send a held-back datagram; False if the kernel refused it."""
        try:
            self.sock.sendmsg([payload], [(socket.IPPROTO_IP, _IP_PKTINFO, self.pktinfo[module])],
                              0, self.dest)
        except OSError:
            return False
        return True


def source_address(module: int) -> str:
    return f"{SOURCE_BASE}{SOURCE_OFFSET + module}"


def simulate(cfg: TMSimConfig, host: str, port: int) -> TMSimSummary:
    """Send ``cfg`` to ``host:port`` now, paced in real time; return what was sent."""
    packets = Packets(cfg)
    sender = ModuleSender(cfg.modules, (host, port), packets.data)
    try:
        return _run(cfg, packets, sender)
    finally:
        sender.close()


def _run(cfg: TMSimConfig, packets: Packets, sender: ModuleSender) -> TMSimSummary:
    summary = TMSimSummary(cfg.modules, cfg.readouts, tack0=cfg.tack0,
                           reset_readout=cfg.reset_readout)
    held: collections.deque[tuple[float, int, bytes]] = collections.deque()
    group_s = cfg.records_per_packet / cfg.rate
    start = time.monotonic()

    def release(until: float) -> None:
        while held and held[0][0] <= until:
            ok = sender.send_copy(*held.popleft()[1:])
            summary.packets += ok
            summary.send_errors += not ok

    for g in range(cfg.packets_per_module):
        due = start + (g + 1) * group_s  # a packet leaves once its last record is taken
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        release(time.monotonic())
        data = packets.group(g, time.time_ns())
        send, lost, late, dup = packets.faults()
        if cfg.stop_module is not None and g * group_s >= cfg.at:
            send = [m for m in send if m != cfg.stop_module]
        held.extend((due + cfg.late_delay, m, data[m].tobytes()) for m in late)
        failed = sender.send(send)
        summary.packets += len(send) - failed
        summary.send_errors += failed
        summary.lost += len(lost)
        summary.late += len(late)
        summary.duplicated += len(dup)
        summary.incomplete_readouts += cfg.records_per_packet if lost or late else 0
    while held:
        time.sleep(max(0.0, held[0][0] - time.monotonic()))
        release(time.monotonic())
    summary.elapsed_s = time.monotonic() - start
    summary.records = summary.packets * cfg.records_per_packet
    summary.late_records = summary.late * cfg.records_per_packet
    summary.duplicated_records = summary.duplicated * cfg.records_per_packet
    return summary


def _cmsg(pktinfo: bytes) -> bytes:
    """One ``IP_PKTINFO`` control message: its ``ipi_spec_dst`` sets the source address."""
    head = struct.pack("@NiI", socket.CMSG_LEN(len(pktinfo)), socket.IPPROTO_IP, _IP_PKTINFO)
    return (head + pktinfo).ljust(socket.CMSG_SPACE(len(pktinfo)), b"\0")


_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python 3.11 does not export it
_SOCKADDR_IN_BYTES = 16


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help="slow-signal TARGET modules (ReadoutAssembler input)",
                              description=__doc__.split("\n\n")[0])
    add_settings(p, TMSimConfig, defaults={"tack0": None})
    p.add_argument("--port", type=int, default=streams.get("readout").input_port)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    tack0 = args.tack0 if args.tack0 is not None else time.time_ns() // 10**9 * 10**9
    cfg = settings_from(args, TMSimConfig, tack0=tack0)
    summary = simulate(cfg, args.host, args.port)
    print(json.dumps(asdict(summary)) if args.json else summary.line(), flush=True)
    return 0
