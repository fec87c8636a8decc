"""Client side of the end-to-end test, run inside the container by Debian's /usr/bin/python3.

It depends on nothing from this repository (only python3-zmq and numpy from Debian), so what it
reports about the installed package comes from the wire alone.

  probe.py subscribe ENDPOINT --seconds S [--idle-s I]
      SUB to ENDPOINT; prints "ready" once connecting, then one JSON line at the end:
      {"messages": [[t, size, number, tack, module_mask] ...], "events": [[t, event] ...]}.
      number/tack/module_mask are decoded for SSReadout messages (16416 bytes), else null.
      t is CLOCK_MONOTONIC (the same clock as the host's). Stops after S seconds, or I seconds
      after the last message once something arrived.
  probe.py send HOST PORT TEXT [--count N]
      N UDP datagrams carrying TEXT.
"""

import argparse
import json
import socket
import sys
import time

import numpy as np
import zmq
import zmq.utils.monitor

#: SSReadout: <4Q (readout number, TACK, CPU s, CPU ns), 32 modules x 64 float64 mV (NaN: absent)
READOUT_BYTES = 4 * 8 + 32 * 64 * 8
EVENT_NAMES = {
    zmq.EVENT_CONNECTED: "connected",
    zmq.EVENT_DISCONNECTED: "disconnected",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshake",
}


def decode_readout(msg: bytes) -> tuple[int, int, int] | tuple[None, None, None]:
    """(readout number, TACK, bit mask of the modules with data) of an SSReadout message."""
    if len(msg) != READOUT_BYTES:
        return None, None, None
    number, tack = np.frombuffer(msg, "<u8", 2)
    values = np.frombuffer(msg, "<f8", offset=32).reshape(32, 64)
    present = ~np.isnan(values).all(axis=1)
    mask = int(sum(1 << i for i in np.flatnonzero(present)))
    return int(number), int(tack), mask


def subscribe(endpoint: str, seconds: float, idle_s: float) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    monitor = sub.get_monitor_socket(
        zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    sub.connect(endpoint)
    print("ready", flush=True)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    messages: list[list] = []
    events: list[list] = []
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end and not (messages and now - messages[-1][0] > idle_s):
        for sock, _ in poller.poll(100):
            if sock is sub:
                msg = sub.recv()
                messages.append([time.monotonic(), len(msg), *decode_readout(msg)])
            else:
                event = zmq.utils.monitor.recv_monitor_message(monitor)
                events.append([time.monotonic(), EVENT_NAMES.get(event["event"], event["event"])])
    print(json.dumps({"messages": messages, "events": events}), flush=True)
    sub.disable_monitor()
    ctx.destroy(linger=0)


def send(host: str, port: int, text: str, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(text.encode(), (host, port))


def main() -> None:
    p = argparse.ArgumentParser()
    cmds = p.add_subparsers(dest="cmd", required=True)
    s = cmds.add_parser("subscribe")
    s.add_argument("endpoint")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--idle-s", type=float, default=1e9)
    u = cmds.add_parser("send")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("text")
    u.add_argument("--count", type=int, default=1)
    args = p.parse_args()
    if args.cmd == "subscribe":
        subscribe(args.endpoint, args.seconds, args.idle_s)
    else:
        send(args.host, args.port, args.text, args.count)


if __name__ == "__main__":
    sys.exit(main())
