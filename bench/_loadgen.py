"""Load generator for the readout benchmark: pre-built TM datagrams, ``sendmmsg`` from one core.

``python -m bench._loadgen PORT RATE DURATION RECORDS TACK0`` sends ``RATE`` readouts/s of 32
modules for ``DURATION`` s and prints what it sent as JSON (the simulator's summary fields).

The camera simulator builds every packet group as it goes (numpy per group), which is what
limits it near 30 000 readouts/s on one core. Here a chunk of groups is built once; per chunk
only the TACKs are rewritten (one numpy assignment), and the chunk leaves in a few ``sendmmsg``
calls, each datagram from its module's address (``IP_PKTINFO``). The ADC words repeat from chunk
to chunk: the benchmark counts readouts, it does not check amplitudes. Pacing follows an
absolute schedule: if the generator cannot keep up, ``elapsed_s`` grows and the benchmark
reports the rate it actually offered.
"""

import json
import sys
import time

import numpy as np

from ssdaq.core import mmsg
from ssdaq.simulators.tm import ModuleSender, Packets, TMSimConfig

MODULES = 32
CHUNK_GROUPS = 64  # groups built once and sent over and over with new TACKs
SLICE_S = 0.001  # a sendmmsg call sends the groups of about a millisecond, at least one


def send(port: int, rate: float, duration: float, records: int, tack0: int) -> dict:
    cfg = TMSimConfig(modules=MODULES, rate=rate, records_per_packet=records, duration=duration,
                      tack0=tack0)
    packets = Packets(cfg)
    groups = min(CHUNK_GROUPS, cfg.packets_per_module)
    data = np.zeros((groups * MODULES, packets.data.shape[1]), np.uint8)
    for g in range(groups):
        data[g * MODULES : (g + 1) * MODULES] = packets.group(g, time.time_ns())
    tacks = data.view(">u8").reshape(groups, MODULES, records, -1)[..., 0]  # the TACK words
    within = (np.arange(groups)[:, None, None] * records + np.arange(records)) * cfg.period_ns
    sender = ModuleSender(MODULES, ("127.0.0.1", port), data)
    fd = sender.sock.fileno()
    group_s = records / rate
    step = MODULES * max(1, min(groups, round(SLICE_S / group_s)))  # datagrams per call
    n_groups, sent, failed = cfg.packets_per_module, 0, 0
    start = time.monotonic()
    try:
        for first in range(0, n_groups, groups):
            count = min(groups, n_groups - first)
            tacks[:] = tack0 + first * records * cfg.period_ns + within  # this chunk's readouts
            for lo in range(0, count * MODULES, step):
                hi = min(lo + step, count * MODULES)
                due = start + (first + hi // MODULES) * group_s  # when its last group is taken
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                failed += mmsg.send_all(fd, sender.msgs, hi, lo)
                sent += hi - lo
    finally:
        sender.close()
    elapsed = time.monotonic() - start
    return {"readouts": cfg.readouts, "packets": sent - failed, "send_errors": failed,
            "elapsed_s": elapsed}


if __name__ == "__main__":
    port, rate, duration, records, tack0 = sys.argv[1:6]
    print(json.dumps(send(int(port), float(rate), float(duration), int(records), int(tack0))))
