"""Restarts split no readout (issue 15): every readout 32/32 across `systemctl restart`, a
reinstall of the .deb and a plain stop + start; and what a `kill -9` costs, measured.

Runs after test_2_readout on the same container and leaves the readout's socket listening. The
1000 readouts/s runs narrow the TACK window in /etc/ssdaq/readout.toml (readouts 1 ms apart)
and put the file back.
"""

import contextlib
import json
import re
import time
from collections.abc import Iterator

import pytest

from ssdaq.receivers.readout_assembler import ReadoutConfig
from tests.e2e.container import Container, wait_until
from tests.e2e.daq import (
    ALL_MODULES,
    READOUT_PUB,
    active,
    collected,
    ensure_listening,
    readouts,
    record,
    record_coverage,
    subscribe,
)
from tests.e2e.packages import Built

pytestmark = pytest.mark.e2e

UNIT = "ssdaq-readout.service"
#: readouts zmq may hold for a subscriber (the shipped publisher's SNDHWM)
READOUT_SNDHWM = ReadoutConfig().publishers[0].sndhwm
CONFIG = "/etc/ssdaq/readout.toml"


def sim(rate: float, seconds: float) -> tuple[str, ...]:
    return tuple(f"ssdaq-sim tm --modules 32 --rate {rate:g} --records-per-packet 10 --port 17000 "
                 f"--duration {seconds:g} --json".split())


@contextlib.contextmanager
def rate_config(machine: Container, rate: float) -> Iterator[None]:
    """Above 10 readouts/s the TACK window must stay below half their spacing (1 ms at 1000/s)."""
    original = machine.run("cat", CONFIG).stdout
    if rate > 10:
        machine.write(CONFIG, original + "\n[assembler]\nreadout_window_ns = 400000\n")
        machine.run("systemctl", "restart", UNIT)
    try:
        yield
    finally:
        machine.write(CONFIG, original)
        machine.run("systemctl", "restart", UNIT)


def handed_on(machine: Container, cursor: str) -> int:
    """Records the stopping processes handed to their successors (their journal lines)."""
    log = "\n".join(str(e.get("MESSAGE", "")) for e in machine.journal(cursor, UNIT))
    return sum(int(n) for n in re.findall(r"handed (\d+) records", log))


def run_with(machine: Container, rate: float, seconds: float, actions: list[tuple[float, tuple]]):
    """Send for ``seconds`` at ``rate`` readouts/s, running each (at s, command) on the way;
    returns (published readouts, the simulator's summary, records handed on meanwhile)."""
    machine.run("systemctl", "start", UNIT)
    cursor = machine.journal_cursor()
    wait_until("readout running", lambda: active(machine, UNIT), 10)
    sub = subscribe(machine, READOUT_PUB, seconds=seconds + 40, idle_s=4)
    time.sleep(1)  # connected and subscribed before the first record
    sender = machine.spawn(*sim(rate, seconds))
    t0 = time.monotonic()
    for at, command in actions:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        machine.run(*command, timeout=120)
    sent = json.loads(sender.communicate(timeout=seconds + 60)[0].strip().splitlines()[-1])
    result = collected(sub, timeout=seconds + 60)
    return readouts(result), sent, handed_on(machine, cursor)


def check(machine: Container, label: str, got: list[list], sent: dict, rate: float) -> None:
    """0 records lost, none twice, every readout 32/32, numbers consecutive."""
    lost, twice, expected, gaps = record_coverage(got, sent, rate)
    split = sum(r[4] != ALL_MODULES for r in got)
    tacks = [r[3] for r in got]
    record(machine, f"{label}: records lost / twice / sent",
           f"{len(lost)} / {len(twice)} / {expected}")
    record(machine, f"{label}: readouts split / TACKs twice / numbers skipped",
           f"{split} / {len(tacks) - len(set(tacks))} / {gaps}")
    assert sent["send_errors"] == 0 and sent["records"] == expected
    assert not lost and not twice, (len(lost), len(twice), expected)
    assert not split and len(set(tacks)) == len(tacks), f"{split} readouts split"
    numbers = [r[2] for r in got]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"{gaps} numbers skipped"


@pytest.mark.parametrize("rate", [10, 1000])
def test_three_restarts_while_the_modules_send_split_no_readout(machine: Container,
                                                                rate: int) -> None:
    restart = ("systemctl", "restart", UNIT)
    with rate_config(machine, rate):
        got, sent, handed = run_with(machine, rate, 10, [(2.5, restart), (5.0, restart),
                                                         (7.5, restart)])
    record(machine, f"3 restarts at {rate} readouts/s: records handed on", str(handed))
    check(machine, f"3 restarts at {rate} readouts/s", got, sent, rate)


def test_a_reinstall_and_a_plain_stop_and_start_split_no_readout(machine: Container,
                                                                 built: Built) -> None:
    deb = f"/root/{built.current.name}"
    got, sent, handed = run_with(machine, 10, 12, [
        (2.5, ("apt-get", "install", "--reinstall", "-y", "-q", deb)),
        (7.0, ("systemctl", "stop", UNIT)),
        (8.5, ("systemctl", "start", UNIT)),
    ])
    record(machine, "reinstall + stop/start: records handed on", str(handed))
    check(machine, "reinstall + stop/start at 10 readouts/s", got, sent, 10)


def test_kill_9_costs_the_open_readouts_and_a_gap_in_numbers_nothing_queued(
        machine: Container) -> None:
    with rate_config(machine, 1000):
        got, sent, _ = run_with(machine, 1000, 6,
                                [(3.0, ("systemctl", "kill", "-s", "KILL", UNIT))])
        wait_until("restarted", lambda: active(machine, UNIT), 15)
    lost, twice, expected, gaps = record_coverage(got, sent, 1000)
    split = sum(r[4] != ALL_MODULES for r in got)
    record(machine, "kill -9 at 1000 readouts/s: records lost / twice / sent",
           f"{len(lost)} / {len(twice)} / {expected}")
    record(machine, "kill -9: readouts split / numbers skipped", f"{split} / {gaps}")
    assert not twice, "a record published twice"
    # lost: what the dead process held — its open readouts (at most max_wait_s = 0.5 s of them)
    # and the readouts it had published that zmq had not yet handed to the kernel (at most the
    # publisher's SNDHWM, 1000); what was in the kernel's socket buffers is still delivered.
    # Measured on the CI machine's kind: 10-510 readouts, depending on how far the subscriber
    # (this harness, on a busy core) had fallen behind.
    lost_tacks = {t for _, t in lost}
    assert len(lost_tacks) <= 500 + READOUT_SNDHWM, f"{len(lost_tacks)} readouts lost records"
    assert gaps >= 1, "the successor starts at the reserved mark"
    ensure_listening(machine)
