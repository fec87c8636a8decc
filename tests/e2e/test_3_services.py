"""The other units: the teldata credential, a site's receiver from the templates, the writer.

The files run in name order on one container (session fixture ``machine``); each test
leaves the units as it found them: sockets listening, receivers stopped or running.
"""

import json
import time

import pytest

from tests.e2e.container import Container
from tests.e2e.daq import (
    RECEIVERS,
    SIM,
    SITE_RECEIVER,
    SOCKETS,
    active,
    collected,
    record,
    subscribe,
)
from tests.e2e.packages import Built

pytestmark = pytest.mark.e2e


# ------------------------------------------------------------------------------- credentials


def test_teldata_takes_its_database_password_from_the_systemd_credential(
    machine: Container,
) -> None:
    """LoadCredential= under the hardening: missing, the mysql source says so; present, it polls."""
    path, unit = "/etc/ssdaq/teldata.toml", "ssdaq-teldata.service"
    original = machine.run("cat", path).stdout
    machine.write(path, f'source = "mysql"\n{original}')
    try:
        machine.run("systemctl", "restart", unit)
        assert "credential" in teldata_status(machine)["problem"]
        machine.write("/etc/credstore/teldata-db-password", "e2e-secret\n", mode=0o600)
        machine.run("systemctl", "restart", unit)  # systemd reads credentials at start only
        status = teldata_status(machine)
        assert status["problem"] is None and status["source"], status
        assert machine.run("cat", f"/run/credentials/{unit}/teldata-db-password").stdout == (
            "e2e-secret\n"
        )
    finally:
        machine.run("systemctl", "stop", unit)
        machine.run("rm", "-f", "/etc/credstore/teldata-db-password")
        machine.write(path, original)


def teldata_status(c: Container) -> dict:
    return json.loads(c.run("ssdaqctl", "teldata", "status").stdout)["result"]


# ------------------------------------------------------------------------------- templates


def test_site_receiver_runs_from_the_template_units(machine: Container) -> None:
    """A site's own ReceiverServer subclass (the seed example) as ssdaq-receiver@NAME."""
    site_packages = machine.run(
        "python3", "-c", "import sys; print('/usr/local/lib/python3.%d/dist-packages' % sys.version_info[1])"
    ).stdout.strip()
    machine.write(f"{site_packages}/site_receivers.py", SITE_RECEIVER.read_text())
    machine.write(
        "/etc/ssdaq/site-packets.toml",
        'receiver_class = "site_receivers:PacketReceiver"\n'
        "[sockets.data]\nport = 17300\n[[publishers]]\nport = 9300\n",
    )
    machine.write(
        "/etc/systemd/system/ssdaq-receiver@site-packets.socket.d/port.conf",
        "[Socket]\nListenDatagram=\nListenDatagram=0.0.0.0:17300\n",
    )
    machine.run("systemctl", "daemon-reload")
    # the drop-in replaced the template's local listener
    assert machine.prop("ssdaq-receiver@site-packets.socket", "Listen") == "0.0.0.0:17300 (Datagram)"
    proc = machine.run(
        "systemd-analyze",
        "verify",
        "--man=no",
        "ssdaq-receiver@site-packets.socket",
        "ssdaq-receiver@site-packets.service",
        check=False,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    machine.run("systemctl", "start", "ssdaq-receiver@site-packets.socket")
    sub = subscribe(machine, "tcp://127.0.0.101:9300", seconds=15, idle_s=1)
    for _ in range(3):  # the first datagram starts the service; zmq PUB drops until SUB is back
        machine.run(
            "python3", "/root/probe.py", "send", "127.0.0.1", "17300", "site-packet", "--count", "1"
        )
        time.sleep(1)
    result = collected(sub, timeout=20)
    assert active(machine, "ssdaq-receiver@site-packets.service")
    assert [m[1] for m in result["messages"]] and all(
        m[1] == len("site-packet") for m in result["messages"]
    )
    assert json.loads(machine.run("ssdaqctl", "site-packets", "ping").stdout)["ok"] is True
    machine.run(
        "systemctl",
        "stop",
        "ssdaq-receiver@site-packets.socket",
        "ssdaq-receiver@site-packets.service",
    )


def test_writer_records_readouts_under_var_lib_ssdaq_data(machine: Container) -> None:
    machine.run("systemctl", "start", "ssdaq-readout.service", "ssdaq-writer@readout.service")
    machine.run(*SIM, "--duration", "3", timeout=30)
    time.sleep(1)
    machine.run("systemctl", "stop", "ssdaq-writer@readout.service")
    files = machine.run("find", "/var/lib/ssdaq/data", "-type", "f").stdout.split()
    assert files, machine.run("journalctl", "-u", "ssdaq-writer@readout", "--no-pager").stdout
    record(machine, "writer output", " ".join(files))


# ------------------------------------------------------------------------------- upgrade


def test_upgrade_restarts_running_receivers_behind_open_sockets(
    machine: Container, built: Built
) -> None:
    """Reinstalling (an upgrade to the same version) runs the new code with no socket closed.

    test_5_upgrade upgrades from the previous release.
    """
    machine.run("systemctl", "start", "ssdaq-readout.service")
    pid = machine.prop("ssdaq-readout.service", "MainPID")
    socket_since = machine.prop("ssdaq-readout.socket", "ActiveEnterTimestampMonotonic")
    deb = f"/root/{built.current.name}"
    t0 = time.monotonic()
    machine.run("apt-get", "install", "--reinstall", "-y", "-q", deb, timeout=300)
    record(machine, "upgrade (apt-get install --reinstall)", f"{time.monotonic() - t0:.1f} s")
    assert active(machine, "ssdaq-readout.service")
    assert machine.prop("ssdaq-readout.service", "MainPID") != pid
    for name in SOCKETS:
        assert active(machine, f"ssdaq-{name}.socket")
    assert machine.prop("ssdaq-readout.socket", "ActiveEnterTimestampMonotonic") == socket_since
    for name in RECEIVERS[1:]:  # not running before: not started by the upgrade either
        assert machine.prop(f"ssdaq-{name}.service", "ActiveState") == "inactive"
