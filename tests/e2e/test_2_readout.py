"""The readout receiver under systemd: issue 5's checks 1-7.

The files run in name order on one container (session fixture ``machine``); each test
leaves the units as it found them: sockets listening, receivers stopped or running.
"""

import json
import time
from pathlib import Path

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.daq import (
    ALL_MODULES,
    READOUT_PUB,
    SIM,
    SIM_RATE_HZ,
    active,
    collected,
    ensure_listening,
    messages,
    readouts,
    reconnect_window,
    record,
    record_coverage,
    subscribe,
)

pytestmark = pytest.mark.e2e


# ------------------------------------------------------------------------------- 1. readout


def test_first_datagram_starts_readout_and_subscriber_gets_complete_readouts(
    machine: Container,
) -> None:
    ensure_listening(machine)
    assert machine.prop("ssdaq-readout.service", "ActiveState") == "inactive"
    sub = subscribe(machine, READOUT_PUB, seconds=30)
    sim = machine.run(*SIM, "--duration", "4", timeout=30)
    result = collected(sub, timeout=40)
    assert active(machine, "ssdaq-readout.service"), "the first datagram did not start the service"
    # from PID 1 starting the service (the datagram's trigger) to the receiver's READY=1
    unit = "ssdaq-readout.service"
    start_us = int(machine.prop(unit, "InactiveExitTimestampMonotonic"))
    ready_us = int(machine.prop(unit, "ActiveEnterTimestampMonotonic"))
    record(machine, "socket activation: trigger -> READY=1", f"{(ready_us - start_us) / 1e6:.3f} s")
    got = readouts(result)
    complete = [r for r in got if r[4] == ALL_MODULES]
    assert len(complete) >= 2 * SIM_RATE_HZ, (sim.stdout, len(got), [hex(r[4]) for r in got[:5]])
    numbers = [r[2] for r in got]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "readout numbers skip"


def test_systemctl_start_runs_readout_with_its_socket(machine: Container) -> None:
    machine.run("systemctl", "stop", "ssdaq-readout.service")
    assert active(machine, "ssdaq-readout.socket")
    machine.run("systemctl", "start", "ssdaq-readout.service")
    assert active(machine, "ssdaq-readout.service")
    status = json.loads(machine.run("ssdaqctl", "readout", "status").stdout)["result"]
    assert status["name"] == "readout"
    # the package recommends python3-uvloop and the receiver's event loop is uvloop's
    maps = machine.run("cat", f"/proc/{status['pid']}/maps").stdout
    assert "/uvloop/loop." in maps, "the readout receiver did not load uvloop"


# ------------------------------------------------------------------------------- 2. status, journal


def test_status_text_and_journal_fields(machine: Container) -> None:
    text = wait_until(
        "StatusText", lambda: machine.prop("ssdaq-readout.service", "StatusText"), timeout=5
    )
    record(machine, "StatusText", text)
    entries = [
        json.loads(line)
        for line in machine.run(
            "journalctl", "-u", "ssdaq-readout.service", "-o", "json", "--no-pager"
        ).stdout.splitlines()
    ]
    own = [e for e in entries if e.get("SSDAQ_RECEIVER") == "readout"]
    assert own, "no journal entry carries SSDAQ_RECEIVER=readout"
    assert all(e.get("SYSLOG_IDENTIFIER") == "ssdaq-readout" for e in own)


# ------------------------------------------------------------------------------- 3. reload


def test_reload_goes_through_reloading_to_ready_and_applies_a_changed_value(
    machine: Container,
) -> None:
    """A [modules] table listing 16 senders makes readouts wait for those 16 only."""
    path = "/etc/ssdaq/readout.toml"
    original = machine.run("cat", path).stdout
    listed = "".join(f'"127.0.0.{100 + m}" = {m}\n' for m in range(16))
    before = machine.show("ssdaq-readout.service", "MainPID", "ActiveState")
    assert expected_modules(machine) == 32
    machine.write(path, f"{original}\n[modules]\n{listed}")
    try:
        cursor = machine.journal_cursor()
        t0 = time.monotonic()
        # ExecReload (kill -HUP) returns at once; the unit is "reloading" until READY=1
        machine.run("systemctl", "reload", "ssdaq-readout.service")
        wait_until(
            "READY=1 after the reload",
            lambda: (
                machine.show("ssdaq-readout.service", "ActiveState", "SubState")
                == {"ActiveState": "active", "SubState": "running"}
            ),
            10,
            0.02,
        )
        record(machine, "reload (systemctl reload -> READY=1)", f"{time.monotonic() - t0:.3f} s")
        log = messages(machine.journal(cursor, "ssdaq-readout.service"))
        assert "Reloading" in log and "Reloaded" in log, log
        assert machine.show("ssdaq-readout.service", "MainPID", "ActiveState") == before
        assert expected_modules(machine) == 16
    finally:
        machine.write(path, original)
        machine.run("systemctl", "reload", "ssdaq-readout.service")
    wait_until("the 32 modules back", lambda: expected_modules(machine) == 32, 10)


def expected_modules(c: Container) -> int:
    """How many module slots the running readout waits for (its ``status``)."""
    return len(json.loads(c.run("ssdaqctl", "readout", "status").stdout)["result"]["modules"])


# ------------------------------------------------------------------------------- 4. restart


def test_restart_while_the_simulator_sends_loses_no_record(machine: Container) -> None:
    """Every record sent appears in exactly one published readout across `systemctl restart`."""
    wait_until("readout running", lambda: active(machine, "ssdaq-readout.service"), 10)
    sub = subscribe(machine, READOUT_PUB, seconds=40, idle_s=3)
    time.sleep(1)  # connected and subscribed before the first record
    sim = machine.spawn(*SIM, "--duration", "10", "--json")
    time.sleep(4.5)
    t0 = time.monotonic()
    machine.run("systemctl", "restart", "ssdaq-readout.service")
    restart_s = time.monotonic() - t0
    sent = json.loads(sim.communicate(timeout=30)[0].strip().splitlines()[-1])
    result = collected(sub, timeout=40)

    lost, twice, expected, gaps = record_coverage(readouts(result), sent)
    window = reconnect_window(result["events"], t0)
    record(machine, "restart (systemctl restart, stop+start)", f"{restart_s:.3f} s")
    record(
        machine,
        "subscriber reconnect window", f"{window:.3f} s" if window is not None else "no reconnect"
    )
    record(machine, "restart: records lost / twice / sent", f"{len(lost)} / {len(twice)} / {expected}")
    record(machine, "restart: readout numbers skipped", str(gaps))
    assert sent["send_errors"] == 0 and sent["records"] == expected
    assert not twice, f"{len(twice)} records published twice"
    assert not lost, (
        f"{len(lost)} of {expected} records lost across the restart "
        f"({gaps} readout numbers skipped, reconnect window {window} s)"
    )


# ------------------------------------------------------------------------------- 5. watchdog


def test_hung_data_path_is_killed_by_the_watchdog_and_restarted(machine: Container) -> None:
    dropin = "/run/systemd/system/ssdaq-readout.service.d/hang.conf"
    machine.write(dropin, "[Service]\nEnvironment=SSDAQ_TEST_HANG_AFTER_S=2\n")
    machine.run("systemctl", "daemon-reload")
    try:
        cursor = machine.journal_cursor()
        machine.run("systemctl", "restart", "ssdaq-readout.service")
        t0 = time.monotonic()
        sim = machine.spawn(*SIM, "--duration", "12")  # the hung reader must have data waiting
        wait_until(
            "a watchdog restart",
            lambda: int(machine.prop("ssdaq-readout.service", "NRestarts") or 0) >= 1,
            timeout=20,
        )
        record(machine, "watchdog: restart -> killed and restarted", f"{time.monotonic() - t0:.1f} s")
        entries = machine.journal(cursor)
        hang = next(e for e in entries if "data path now hangs" in str(e.get("MESSAGE")))
        kill = next(e for e in entries if "Watchdog timeout" in str(e.get("MESSAGE")))
        hung_s = (int(kill["__MONOTONIC_TIMESTAMP"]) - int(hang["__MONOTONIC_TIMESTAMP"])) / 1e6
        limit = machine.prop("ssdaq-readout.service", "WatchdogUSec")
        record(machine, "watchdog: hang -> kill", f"{hung_s:.1f} s (WatchdogSec={limit})")
        assert any("Failed with result 'watchdog'" in str(e.get("MESSAGE")) for e in entries)
        sim.communicate(timeout=30)
    finally:
        # stop before the drop-in goes: a daemon-reload during a start once delayed READY=1 by 7 s
        machine.run("systemctl", "stop", "ssdaq-readout.service")
        machine.run("rm", "-r", str(Path(dropin).parent))
        machine.run("systemctl", "daemon-reload")
        ensure_listening(machine)


# ------------------------------------------------------------------------------- 6. bad config


def test_bad_config_fails_once_with_78_naming_file_and_key(machine: Container) -> None:
    """With the modules sending: one attempt, exit 78, and the socket closes (no retrigger loop)."""
    ensure_listening(machine)
    path = "/etc/ssdaq/readout.toml"
    original = machine.run("cat", path).stdout
    machine.write(path, "no_such_setting = 1\n" + original)
    try:
        cursor = machine.journal_cursor()
        sim = machine.spawn(*SIM, "--duration", "4")  # its first datagram starts the service
        wait_until(
            "the start to fail",
            lambda: machine.prop("ssdaq-readout.service", "ActiveState") == "failed",
            timeout=15,
        )
        sim.communicate(timeout=30)  # and datagrams kept coming for another 3 s
        props = machine.show(
            "ssdaq-readout.service", "ActiveState", "Result", "ExecMainStatus", "NRestarts"
        )
        assert props == {
            "ActiveState": "failed",
            "Result": "exit-code",
            "ExecMainStatus": "78",
            "NRestarts": "0",
        }
        assert machine.prop("ssdaq-readout.socket", "ActiveState") == "inactive"
        log = messages(machine.journal(cursor, "ssdaq-readout.service"))
        assert log.count("Starting ") == 1, log
        error = next(line for line in log.splitlines() if "no_such_setting" in line)
        assert path in error, error
        record(machine, "bad config journal line", error)
    finally:
        machine.write(path, original)
        ensure_listening(machine)


# ------------------------------------------------------------------------------- 7. commands


def test_command_socket_answers_group_ssdaq_only(machine: Container) -> None:
    machine.run("systemctl", "start", "ssdaq-readout.service")
    machine.run("useradd", "--no-create-home", "--groups", "ssdaq", "e2e-member")
    machine.run("useradd", "--no-create-home", "e2e-other")
    member = machine.run(
        "ssdaqctl", "readout", "status", "--timeout", "2", user="e2e-member", check=False
    )
    assert member.returncode == 0, member.stderr
    assert json.loads(member.stdout)["result"]["name"] == "readout"
    other = machine.run(
        "ssdaqctl", "readout", "status", "--timeout", "2", user="e2e-other", check=False
    )
    assert (other.returncode, other.stdout) == (2, ""), other
    mode = machine.run("stat", "-c", "%A %U:%G", "/run/ssdaq", "/run/ssdaq/readout.ctl").stdout
    assert mode.split("\n")[:2] == ["drwxr-x--- ssdaq:ssdaq", "srw-rw---- ssdaq:ssdaq"]
