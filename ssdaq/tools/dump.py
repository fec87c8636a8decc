"""``ssdaq-dump STREAM``: one line per message published on a stream, for a quick look or a pipe.

Lines go to stdout, one per message. Missing readout numbers, messages that do not decode and the
closing summary go to stderr, prefixed with "#", so stdout stays one line per message.
"""

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ssdaq import streams
from ssdaq.core.cli import Parser
from ssdaq.data import messages, trigger
from ssdaq.data.readout import N_TM, SSReadout
from ssdaq.subscribers import SUBSCRIBERS, Subscriber

EXIT_NO_DATA = 2
_CDTS_TYPES = messages.TriggerMessage.DESCRIPTOR.fields_by_name["type"].enum_type
_WR_STATUS = messages.TriggerMessage.DESCRIPTOR.fields_by_name["status"].enum_type


def utc(ns: int) -> str:
    """ISO 8601 UTC with nanoseconds: 2024-05-01T21:03:04.123456789Z."""
    seconds, nanos = divmod(int(ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _enum(enum: object, value: int) -> str:
    found = enum.values_by_number.get(value)  # type: ignore[attr-defined]
    return found.name if found else str(value)


def readout_line(r: SSReadout) -> str:
    present = r.modules_present
    if len(present):
        values = r.data[present]
        amplitude = f"min {np.nanmin(values):.1f} mV max {np.nanmax(values):.1f} mV"
    else:
        amplitude = "no data"
    return (f"readout {r.iro} tack {r.time} cpu {utc(r.cpu_t_s * 1_000_000_000 + r.cpu_t_ns)} "
            f"modules {len(present)}/{N_TM} {amplitude}")


def trigger_line(p: trigger.TriggerPacket) -> str:
    return (f"{type(p).__name__} tack {p.tack_time} phase {p.phase_index} ro_count {p.ro_count} "
            f"pps {p.pps_count} clock {p.clock_count} source {p.source} "
            f"busy {'yes' if p.busy else 'no'} samples {p.readout_length} "
            f"triggered {int(p.union.sum())} SPs")


def timestamp_line(m: messages.TriggerMessage) -> str:
    return (f"event {m.event_counter} {_enum(_CDTS_TYPES, m.type)} "
            f"time {m.time.seconds}.{m.time.pico_seconds:012d} pps {m.pps_counter} "
            f"clock {m.clock_counter} telescope {m.telescope} {_enum(_WR_STATUS, m.status)}")


def log_line(m: messages.LogData) -> str:
    level = logging.getLevelName(m.severity)
    return f"{utc(m.time)} {level} {m.sender}: {m.message} ({m.sourceFile}:{m.line}, pid {m.pid})"


def monitor_line(m: messages.MonitorData) -> str:
    r = m.reciver
    return (f"{utc(messages.ns_from_time_utc(m.time))} {r.name} pid {r.pid} "
            f"rate {r.data_rate:.1f}/s data {'yes' if r.recv_data else 'no'}")


def teldata_line(m: messages.TelData) -> str:
    return f"{utc(messages.ns_from_time_utc(m.time))} ra {m.ra:.4f} dec {m.dec:.4f}"


LINES: dict[str, Callable[[Any], str]] = {"readout": readout_line, "trigger": trigger_line, "timestamp": timestamp_line,
         "log": log_line, "monitor": monitor_line, "teldata": teldata_line}


def parser() -> Parser:
    p = Parser(
        prog="ssdaq-dump",
        description="Print one line per message published on an ssdaq stream: readouts (number, "
        "TACK, CPU time, modules present, min/max mV), trigger packets, timestamps, log records, "
        "monitoring, telescope data.",
        epilog=f"Standard ports on {streams.PUB_IP}: "
        + ", ".join(f"{s} {streams.get(s).pub_port}" for s in SUBSCRIBERS)
        + f". Exit status 0, or {EXIT_NO_DATA} when --timeout passed without any message.",
    )
    p.add_argument("stream", choices=sorted(SUBSCRIBERS))
    p.add_argument("--ip", default=streams.PUB_IP, help=f"publisher address ({streams.PUB_IP})")
    p.add_argument("--port", type=int, help="publisher port (the stream's standard port)")
    p.add_argument("--endpoint", help="full zmq endpoint, overrides --ip and --port")
    p.add_argument("--bind", action="store_true", help="bind instead of connecting "
                   "(for a publisher in remote mode)")
    p.add_argument("-n", "--count", type=int, help="stop after this many messages")
    p.add_argument("--timeout", type=float,
                   help="stop after this many seconds without a message (default: never)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = logging.getLogger("ssdaq")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("# %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    sub: Subscriber = SUBSCRIBERS[args.stream](
        args.ip, args.port, endpoint=args.endpoint, timeout_s=args.timeout, bind=args.bind)
    line = LINES[args.stream]
    shown = 0
    try:
        for message in sub:
            print(line(message), flush=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                break
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        sub.close()
    summary = f"# {shown} messages from {sub.endpoint}, {sub.bad} bad"
    if args.stream == "readout":
        seq = sub.sequence  # type: ignore[attr-defined]
        summary += f", {seq.missed} readouts missed in {seq.gaps} gaps"
    print(summary, file=sys.stderr)
    if shown == 0 and args.timeout is not None:
        print(f"# nothing from {sub.endpoint} within {args.timeout:g} s", file=sys.stderr)
        return EXIT_NO_DATA
    return 0


if __name__ == "__main__":
    sys.exit(main())
