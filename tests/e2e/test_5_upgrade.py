"""Upgrade from the previous release (found in git history) while the modules send.

Runs after the purge, on the same container: the previous release's .deb is installed, the DAQ
started, a setting edited locally, then this tree's .deb installed over it with apt, as a site
would, with nothing on stdin (a conffile prompt would fail it).
"""

import json
import re
import time

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.daq import (
    READOUT_PUB,
    RECEIVERS,
    SIM,
    SOCKETS,
    active,
    collected,
    readouts,
    record,
    record_coverage,
    subscribe,
)
from tests.e2e.packages import Built, unavailable

pytestmark = pytest.mark.e2e

EDITED = "/etc/ssdaq/readout.toml"
UNEDITED = "/etc/ssdaq/trigger.toml"
WRITER = "ssdaq-writer@readout.service"
DATA = "/var/lib/ssdaq/data/readout"


def local_edit(text: str) -> str:
    """``max_wait_s = 0.4`` under [assembler], in a file that lists it active or commented out."""
    edited = re.sub(r"^#?\[assembler\]$", "[assembler]", text, count=1, flags=re.MULTILINE)
    edited = re.sub(r"^#?max_wait_s = .*$", "max_wait_s = 0.4", edited, count=1, flags=re.MULTILINE)
    assert edited != text
    return edited


def recorded(c: Container) -> set[str]:
    """The writer's files, by name (a file being written is NAME.part until it is closed)."""
    names = c.run("find", DATA, "-type", "f", "-printf", "%f\\n").stdout.split()
    return {n.removesuffix(".part") for n in names}


def test_upgrade_from_the_previous_release_while_the_simulator_sends(
    machine: Container, built: Built
) -> None:
    if built.previous is None:
        unavailable(f"no previous release to upgrade from: {built.no_previous}")
    machine.run("apt-get", "install", "-y", "-q", f"/root/{built.previous.name}", timeout=300)
    assert machine.run("dpkg-query", "-W", "-f=${Version}", "ssdaq").stdout == built.previous_version
    edited = local_edit(machine.run("cat", EDITED).stdout)
    machine.write(EDITED, edited)
    machine.run("systemctl", "start", "ssdaq.target", WRITER)
    for unit in (*(f"ssdaq-{n}.service" for n in RECEIVERS), WRITER):
        wait_until(f"{unit} running", lambda u=unit: active(machine, u), timeout=15)
    before = {
        unit: machine.prop(unit, "MainPID")
        for unit in (*(f"ssdaq-{n}.service" for n in RECEIVERS), WRITER)
    }
    sockets = {
        f"ssdaq-{n}.socket": machine.prop(f"ssdaq-{n}.socket", "ActiveEnterTimestampMonotonic")
        for n in SOCKETS
    }

    sub = subscribe(machine, READOUT_PUB, seconds=60, idle_s=8)
    time.sleep(1)  # connected and subscribed before the first record
    sim = machine.spawn(*SIM, "--duration", "14", "--json")
    time.sleep(4)
    files_before = recorded(machine)
    t0 = time.monotonic()
    # as a site would run it: no DEBIAN_FRONTEND, no --force-conf*, and stdin at EOF
    upgrade = machine.run(
        "apt-get", "install", "-y", f"/root/{built.current.name}", timeout=300, input=""
    )
    record(machine, f"upgrade {built.previous_version} -> this tree (apt-get install)",
           f"{time.monotonic() - t0:.1f} s")
    sent = json.loads(sim.communicate(timeout=60)[0].strip().splitlines()[-1])
    result = collected(sub, timeout=60)

    assert "Configuration file" not in upgrade.stdout + upgrade.stderr, upgrade.stdout
    assert machine.run("dpkg-query", "-W", "-f=${Version}", "ssdaq").stdout != built.previous_version
    # restarted behind their sockets, which stayed open
    for unit, pid in before.items():
        assert active(machine, unit) and machine.prop(unit, "MainPID") != pid, unit
    for unit, since in sockets.items():
        assert machine.prop(unit, "ActiveEnterTimestampMonotonic") == since, unit
    # every record in a published readout, once; the readout split by the restart is allowed
    lost, twice, expected, gaps = record_coverage(readouts(result), sent)
    record(machine, "upgrade: records lost / twice / sent", f"{len(lost)} / {len(twice)} / {expected}")
    assert sent["send_errors"] == 0 and sent["records"] == expected
    assert not lost and not twice, (len(lost), len(twice), expected, gaps)
    # the readout numbers went on from the kept state
    numbers = [r[2] for r in readouts(result)]
    assert numbers == sorted(set(numbers)), "readout numbers went back across the upgrade"
    # the local edit is still there and in effect; the file nobody edited became the new one
    assert machine.run("cat", EDITED).stdout == edited
    merged = machine.run("ssdaq-receiver", "readout", "--print-config").stdout
    assert re.search(r"^max_wait_s = 0\.4$", merged, flags=re.MULTILINE), merged
    machine.run("cmp", "/usr/share/ssdaq/config/trigger.toml", UNEDITED)
    # what was recorded before is kept, and the restarted writer records on
    files_after = recorded(machine)
    assert files_before <= files_after and len(files_after) > len(files_before), (
        files_before, files_after)
