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

from ssdaq.core.mmsg import MMSG_BYTES, IOVec, MMsgHdr, sendmmsg
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

    modules: int = N_TM
    rate: float = 10.0
    records_per_packet: int = 10
    duration: float = 10.0
    tack0: int = 0
    jitter_ns: int = 0
    loss: float = 0.0
    late: float = 0.0
    late_delay: float = 1.0
    duplicate: float = 0.0
    reset_at: float | None = None
    seed: int = 0

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
    """What was sent; ``lost`` / ``late`` / ``duplicated`` count packets hit by each fault."""

    modules: int
    readouts: int
    packets: int = 0
    records: int = 0
    lost: int = 0
    late: int = 0
    duplicated: int = 0
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


class _MMsgSender:
    """Sends datagrams as modules 127.0.0.(100 + i), many per system call.

    One socket with ``sendmmsg(2)`` (through ctypes) and an ``IP_PKTINFO`` source address per
    message: a datagram costs about a third less CPU than one ``sendto`` per module socket, which
    is what lets a single simulator process load the assembler well past 10 000 readouts/s.
    """

    def __init__(self, modules: int, dest: tuple[str, int], data: np.ndarray) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dest, self.data = dest, data
        self._name = ctypes.create_string_buffer(
            struct.pack("=HH4s8x", socket.AF_INET, socket.htons(dest[1]),
                        socket.inet_aton(socket.gethostbyname(dest[0])))
        )
        self.pktinfo = [struct.pack("@i4s4x", 0, socket.inet_aton(source_address(m)))
                        for m in range(modules)]
        self._control = [ctypes.create_string_buffer(_cmsg(info)) for info in self.pktinfo]
        self._iov = (IOVec * modules)()
        self._msgs = (MMsgHdr * modules)()
        for m, (iov, msg) in enumerate(zip(self._iov, self._msgs)):
            iov.iov_base, iov.iov_len = data.ctypes.data + m * data.strides[0], data.shape[1]
            h = msg.msg_hdr
            h.msg_name, h.msg_namelen = ctypes.addressof(self._name), _SOCKADDR_IN_BYTES
            h.msg_iov, h.msg_iovlen = ctypes.pointer(iov), 1
            h.msg_control = ctypes.addressof(self._control[m])
            h.msg_controllen = len(self._control[m])

    def close(self) -> None:
        self.sock.close()

    def send(self, modules: list[int]) -> int:
        """Send the current datagram of each listed module; return how many failed."""
        if modules == list(range(len(self._msgs))):
            msgs = self._msgs
        else:
            msgs = (MMsgHdr * len(modules))(*(self._msgs[m] for m in modules))
        done = failed = 0
        while done < len(msgs):
            n = sendmmsg(self.sock.fileno(), ctypes.byref(msgs, done * MMSG_BYTES), len(msgs) - done, 0)
            if n < 0:  # ENOBUFS and the like under overload: skip that one, keep the schedule
                failed += 1
                n = 1
            done += n
        return failed

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
    sender = _MMsgSender(cfg.modules, (host, port), packets.data)
    try:
        return _run(cfg, packets, sender)
    finally:
        sender.close()


def _run(cfg: TMSimConfig, packets: Packets, sender: _MMsgSender) -> TMSimSummary:
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
        held.extend((due + cfg.late_delay, m, data[m].tobytes()) for m in late)
        failed = sender.send(send)
        summary.packets += len(send) - failed
        summary.send_errors += failed
        summary.lost += len(lost)
        summary.late += len(late)
        summary.duplicated += len(dup)
    while held:
        time.sleep(max(0.0, held[0][0] - time.monotonic()))
        release(time.monotonic())
    summary.elapsed_s = time.monotonic() - start
    summary.records = summary.packets * cfg.records_per_packet
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
    p.add_argument("--modules", type=int, default=N_TM, choices=range(1, N_TM + 1),
                   metavar=f"1..{N_TM}")
    p.add_argument("--rate", type=_positive, default=10.0, help="readouts/s (default 10)")
    p.add_argument("--records-per-packet", type=int, default=10, choices=range(1, 11),
                   metavar="1..10", help="records per datagram (10 fills a 1500 B MTU)")
    p.add_argument("--duration", type=_positive, default=10.0, metavar="S")
    p.add_argument("--port", type=int, default=17000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tack0", type=int, default=None, metavar="NS",
                   help="TACK of readout 0 (default: now, UTC ns, whole second)")
    p.add_argument("--jitter-ns", type=int, default=0, metavar="J",
                   help="each record's TACK off by up to +-J ns")
    p.add_argument("--loss", type=_probability, default=0.0, metavar="P",
                   help="drop a packet with probability P")
    p.add_argument("--late", type=_probability, default=0.0, metavar="P",
                   help="hold a packet back by --late-delay")
    p.add_argument("--late-delay", type=_positive, default=1.0, metavar="S")
    p.add_argument("--duplicate", type=_probability, default=0.0, metavar="P",
                   help="send a packet twice")
    p.add_argument("--reset-at", type=float, default=None, metavar="S",
                   help=f"restart the TACK counter (at {RESET_TACK0} ns) S seconds in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in 0..1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    tack0 = args.tack0 if args.tack0 is not None else time.time_ns() // 10**9 * 10**9
    cfg = TMSimConfig(
        modules=args.modules, rate=args.rate, records_per_packet=args.records_per_packet,
        duration=args.duration, tack0=tack0, jitter_ns=args.jitter_ns, loss=args.loss,
        late=args.late, late_delay=args.late_delay, duplicate=args.duplicate,
        reset_at=args.reset_at, seed=args.seed,
    )
    summary = simulate(cfg, args.host, args.port)
    print(json.dumps(asdict(summary)) if args.json else summary.line(), flush=True)
    return 0
