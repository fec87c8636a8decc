"""A restart of the assembler splits no readout: the socket outlives the process, as under systemd.

The test holds the UDP socket (systemd's part) and hands it to each process the way socket
activation does (fd 3, LISTEN_PID, LISTEN_FDNAMES=data). While the simulated camera sends, the
first process is stopped and a second one started on the same socket and state directory.
Without the hand-over, the readouts straddling the stop came out as two partial readouts each.
"""

import socket
import sys
import time
from pathlib import Path

import pytest
import zmq

from ssdaq.core.sockets import SO_RCVBUFFORCE
from ssdaq.data.readout import SSReadout
from ssdaq.receivers import readout_handover as handover
from ssdaq.simulators.tm import datagram, source_address
from tests.conftest import free_port
from tests.receivers.conftest import subscribe
from tests.receivers.test_readout_assembler import T0

PERIOD_NS = 100_000_000  # 10 readouts/s
#: fd 3 is the socket (argv[1]), named "data", and LISTEN_PID the process that execs argv[2:]
ACTIVATE = [sys.executable, "-c", "import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='data'); "
            "os.execv(sys.argv[2], sys.argv[2:])"]


def held_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    except PermissionError:
        s.close()
        pytest.skip("needs CAP_NET_ADMIN for a 16 MiB receive buffer (systemd's ReceiveBuffer=)")
    s.bind(("127.0.0.1", 0))
    return s


def start(start_receiver, sock: socket.socket, pub_port: int, state: Path):
    config = (f'state_file = "{state}"\nstart_hold_s = 0.5\n[monitor]\nenabled = false\n'
              f'[[publishers]]\nip = "127.0.0.1"\nport = {pub_port}\n')
    return start_receiver("readout", config, prefix=[*ACTIVATE, str(sock.fileno())],
                          pass_fds=[sock.fileno()])


class Camera:
    """32 modules sending from their own addresses; ``send(modules, readouts)``: one datagram per
    module holding those readouts' records."""

    def __init__(self, port: int) -> None:
        self.dest = ("127.0.0.1", port)
        self.socks = []
        for m in range(32):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((source_address(m), 0))
            self.socks.append(s)

    def send(self, modules: range, readouts: range) -> None:
        for m in modules:
            self.socks[m].sendto(datagram(m, list(readouts), [tack(k) for k in readouts]), self.dest)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def tack(k: int) -> int:
    return T0 + k * PERIOD_NS


def test_a_stop_while_readouts_are_open_splits_none_across_the_next_start(
        start_receiver, zmq_context, tmp_path: Path) -> None:
    sock, pub_port = held_socket(), free_port(socket.SOCK_STREAM)
    state = tmp_path / "readout-number"
    camera = Camera(sock.getsockname()[1])
    first = start(start_receiver, sock, pub_port, state)
    sub = subscribe(zmq_context, pub_port)
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    for k in range(0, 100, 10):
        camera.send(range(32), range(k, k + 10))
    camera.send(range(16), range(100, 110))
    camera.send(range(16, 32), range(100, 105))  # 100-104 complete, 105-109 open with 16 modules
    first.wait_counter("complete", 105)
    first.proc.terminate()
    time.sleep(0.05)  # stopping: the rest of 105-109 still arrives, with 110-114 in the same packets
    camera.send(range(16, 32), range(105, 115))
    camera.send(range(16), range(110, 120))
    camera.send(range(16, 32), range(115, 120))
    first.stop()
    second = start(start_receiver, sock, pub_port, state)
    for k in range(120, 200, 10):
        camera.send(range(32), range(k, k + 10))
    got = []
    try:
        while True:
            got.append(SSReadout.from_bytes(sub.recv()))
    except zmq.Again:
        pass
    handed, taken = first_counter(first), second.counter("taken_over")
    print(f"stop + start with 5 readouts open: {len(got)} readouts, "
          f"{sum(len(r.modules_present) != 32 for r in got)} partial, "
          f"{len(got) - len({r.time for r in got})} TACKs twice, {handed} records handed on, "
          f"{taken} taken over")
    assert [r.time for r in got] == [tack(k) for k in range(200)]
    assert all(len(r.modules_present) == 32 for r in got), "a readout was split"
    assert [r.iro for r in got] == list(range(1, 201))
    assert handed == taken >= 16 * 5  # at least 110-114 of modules 16-31, read with 105-109
    assert not (tmp_path / "readout-handover.npz").exists(), "taken over, the file goes"
    second.stop()
    camera.close()
    sock.close()


def first_counter(running) -> int:
    """``handed_on`` of a stopped assembler, from its last log line about it."""
    lines = [line for line in running.proc.err.splitlines() if "handed " in line and " records" in line]
    return int(lines[-1].split("handed ")[1].split()[0]) if lines else 0


def test_a_hand_over_that_cannot_be_read_is_kept_aside_and_counted(start_receiver, tmp_path) -> None:
    sock, pub_port = held_socket(), free_port(socket.SOCK_STREAM)
    (tmp_path / "readout-handover.npz").write_bytes(b"not a hand-over")
    running = start(start_receiver, sock, pub_port, tmp_path / "readout-number")
    assert running.counter("handover_rejected") == 1
    assert (tmp_path / f"readout-handover.npz{handover.REJECTED}").read_bytes() == b"not a hand-over"
    assert "cannot take the records handed over" in running.stop()
    sock.close()
