"""ssdaq-web under systemd: installed and listening, started by the first request, as its own user.

Runs on the session's container after the other services' tests (name order) and before the
purge; it leaves the units as it found them: sockets listening, services stopped.
"""

import re

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.daq import active, ensure_listening

pytestmark = pytest.mark.e2e

FETCH = ("import sys, urllib.request; "
         "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9010/metrics', timeout=20)"
         ".read().decode())")


def test_the_first_request_starts_ssdaq_web_and_metrics_list_the_running_receivers(
        machine: Container) -> None:
    assert active(machine, "ssdaq-web.socket")
    assert machine.prop("ssdaq-web.socket", "UnitFileState") == "enabled"
    assert machine.prop("ssdaq-web.service", "ActiveState") == "inactive"
    machine.run("systemctl", "start", "ssdaq-readout.service", "ssdaq-trigger.service")
    try:
        metrics = machine.run("python3", "-c", FETCH, timeout=60).stdout
        assert active(machine, "ssdaq-web.service")
        for name in ("readout", "trigger"):
            assert f'ssdaq_up{{receiver="{name}"}} 1.0' in metrics, metrics
            assert f'ssdaq_unit_state{{receiver="{name}",state="active"}} 1.0' in metrics
            restarts = re.escape(f'ssdaq_unit_restarts_total{{receiver="{name}"}} ')
            assert re.search(f"^{restarts}\\d", metrics, re.M), metrics
        # the log receiver's socket listens and nothing has started it: idle, not down
        assert 'ssdaq_unit_state{receiver="log",state="idle"} 1.0' in metrics
        assert 'ssdaq_up{receiver="monitor"} 0.0' in metrics
        assert 'ssdaq_unit_state{receiver="monitor",state="inactive"} 1.0' in metrics
        # its own dynamic user, in group ssdaq (PrivateUsers= would have made it nogroup)
        pid = machine.prop("ssdaq-web.service", "MainPID")
        status = dict(line.split(":", 1) for line in
                      machine.run("cat", f"/proc/{pid}/status").stdout.splitlines())
        gid = machine.run("getent", "group", "ssdaq").stdout.split(":")[2]
        assert status["Uid"].split()[0] != "0" and gid in status["Groups"].split(), status
        wait_until("READY=1 status line", lambda: "answering" in machine.prop(
            "ssdaq-web.service", "StatusText"), 10)
    finally:
        machine.run("systemctl", "stop", "ssdaq-web.service")
        ensure_listening(machine)
    assert active(machine, "ssdaq-web.socket")
