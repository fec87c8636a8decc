"""ssdaq-dump as a process: one line per message, gaps and bad messages on stderr."""

import logging
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from ssdaq.data import messages, trigger
from ssdaq.simulators.tm import TMSimConfig, pattern_mv, simulate
from tests.conftest import child_env, free_port
from tests.livepub import readout
from tests.tools.test_ctl import readout_config


def dump(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ssdaq.tools.dump", *args], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_readouts_one_line_each_with_gaps_and_bad_messages_on_stderr(publisher) -> None:
    pub = publisher()
    proc = dump("readout", "--endpoint", pub.endpoint, "--count", "4")
    pub.wait_subscriber()
    sent = [readout(1), readout(2), readout(5, absent=tuple(range(31))), readout(6, absent=(0,))]
    pub.send(sent[0].pack())
    pub.send(sent[1].pack())
    pub.send(b"short")
    for r in sent[2:]:
        pub.send(r.pack())
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    r = sent[2]
    present = r.data[~np.isnan(r.data).all(axis=1)]
    assert lines[2] == (f"readout 5 tack {r.time} cpu 2023-11-14T22:13:25.123456789Z modules 1/32 "
                        f"min {present.min():.1f} mV max {present.max():.1f} mV")
    assert lines[3].startswith("readout 6 ") and " modules 31/32 " in lines[3]
    assert "# readouts 3..4 missing" in err
    assert "# bad_size: 1 since last report" in err
    assert err.rstrip().endswith("4 messages from " + pub.endpoint + ", 1 bad, 2 readouts missed in 1 gaps")


def record() -> logging.LogRecord:
    return logging.makeLogRecord({"name": "ssdaq.readout", "levelno": logging.WARNING,
                                  "msg": "module %d absent", "args": (7,), "pathname": "/a/b.py",
                                  "lineno": 42, "created": 1_700_000_000.5, "process": 99})


def timestamp() -> messages.TriggerMessage:
    m = messages.TriggerMessage(telescope=1, event_counter=12, pps_counter=3, clock_counter=4,
                                type=2)
    m.time.seconds, m.time.pico_seconds = 1_700_000_000, 5
    return m


@pytest.mark.parametrize("stream,payload,line", [
    ("trigger", trigger.TriggerPacketV2(tack_time=77, phase=4, ro_count=9, pps_count=1,
                                        clock_count=2, source=3, message_type=1,
                                        trigger_patterns=np.eye(16, 512, 3)).pack(),
     "TriggerPacketV2 tack 77 phase 2 ro_count 9 pps 1 clock 2 source 3 busy yes samples 16 "
     "triggered 16 SPs"),
    ("timestamp", timestamp().SerializeToString(),
     "event 12 BusyTrigger time 1700000000.000000000005 pps 3 clock 4 telescope 1 TrackPhase"),
    ("log", messages.log_data(record()).SerializeToString(),
     "2023-11-14T22:13:20.500000000Z WARNING ssdaq.readout: module 7 absent (/a/b.py:42, pid 99)"),
    ("monitor", messages.monitor_data("ReadoutAssembler", 42, True, 31.5,
                                      ns=1_700_000_000_000_000_001).SerializeToString(),
     "2023-11-14T22:13:20.000000001Z ReadoutAssembler pid 42 rate 31.5/s data yes"),
    ("teldata", messages.tel_data(83.5, -22.25, ns=1_700_000_000_000_000_000).SerializeToString(),
     "2023-11-14T22:13:20.000000000Z ra 83.5000 dec -22.2500"),
])
def test_every_stream_has_its_line(stream: str, payload: bytes, line: str, publisher) -> None:
    pub = publisher()
    proc = dump(stream, "--endpoint", pub.endpoint, "-n", "1")
    pub.wait_subscriber()
    pub.send(payload)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == line + "\n"


def test_silence_until_the_timeout_exits_2(publisher) -> None:
    pub = publisher()
    done = subprocess.run([sys.executable, "-m", "ssdaq.tools.dump", "monitor", "--endpoint",
                           pub.endpoint, "--timeout", "0.5"], env=child_env(), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and f"nothing from {pub.endpoint} within 0.5 s" in done.stderr


def test_dumps_what_the_readout_assembler_publishes(start_receiver) -> None:
    port, pub_port = free_port(), free_port(socket.SOCK_STREAM)
    start_receiver("readout", readout_config(port, pub_port))
    proc = dump("readout", "--ip", "127.0.0.1", "--port", str(pub_port), "--count", "10",
                "--timeout", "10")
    sim = TMSimConfig(modules=32, rate=20, records_per_packet=5, duration=3.0, tack0=10**18)
    feeder = threading.Thread(target=simulate, args=(sim, "127.0.0.1", port))
    feeder.start()  # the dump subscribes meanwhile; it prints the 10 readouts it gets first
    out, err = proc.communicate(timeout=60)
    feeder.join()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 10
    first = int(lines[0].split()[1])
    k = first - 1  # readout numbers start at 1 for readout index 0
    values = pattern_mv(np.arange(32)[:, None], k, np.arange(64))
    assert lines[0] == (f"readout {first} tack {sim.readout_tack(k)} cpu {lines[0].split()[5]} "
                        f"modules 32/32 min {values.min():.1f} mV max {values.max():.1f} mV")
    assert [int(x.split()[1]) for x in lines] == list(range(first, first + 10))
