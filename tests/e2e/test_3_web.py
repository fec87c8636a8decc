"""ssdaq-web under systemd: installed and listening, started by the first request, as its own user.

Runs on the session's container after the other services' tests (name order) and before the
purge; it leaves the units as it found them: sockets listening, services stopped.
"""

import json
import re

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.daq import active, ensure_listening

pytestmark = pytest.mark.e2e

FETCH = ("import sys, urllib.request; "
         "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9010/metrics', timeout=20)"
         ".read().decode())")
# the page, every script and style it names and the status API, fetched from inside the machine
# (which has no route to the internet): what each returned, as JSON
PAGE = """
import json, re, time, urllib.request
def get(path):
    with urllib.request.urlopen("http://127.0.0.1:9010" + path, timeout=20) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()
status, kind, html = get("/")
assets = re.findall(r'(?:src|href)="([^"]+)"', html)
for _ in range(100):  # the first poll of the receivers may still be under way
    api = json.loads(get("/api/status")[2])
    if any(r["name"] == "readout" and r["running"] for r in api["receivers"]):
        break
    time.sleep(0.1)
print(json.dumps({"page": [status, kind, html], "assets": {a: get(a)[:2] for a in assets},
                  "api": api,
                  "geometry": len(json.loads(get("/api/geometry")[2])["row"])}))
"""


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
        # its own user, in group ssdaq (PrivateUsers= would have made it nogroup)
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


def test_the_page_and_everything_it_loads_come_from_the_package(machine: Container) -> None:
    """The shifter's page as a browser on the site network gets it: the HTML with the hooks
    the page's tests use, its script and style from the installed package (the container, like
    a camera host, reaches no internet), and the receivers' status beside it; and nothing in
    its journal warns (Debian 13's newer aiohttp warns where Debian 12's is silent)."""
    machine.run("systemctl", "start", "ssdaq-readout.service")
    try:
        got = json.loads(machine.run("python3", "-c", PAGE, timeout=60).stdout)
        status, kind, html = got["page"]
        assert status == 200 and kind.startswith("text/html")
        for hook in ('id="camera"', 'id="receivers"', 'id="readout-number"', 'id="modules"'):
            assert hook in html, hook
        assert got["assets"] and all(a.startswith("/static/") for a in got["assets"]), got["assets"]
        assert all(s == 200 for s, _ in got["assets"].values()), got["assets"]
        assert got["geometry"] == 2048
        readout = [r for r in got["api"]["receivers"] if r["name"] == "readout"]
        assert readout and readout[0]["running"], got["api"]
        # Python's warnings (e.g. aiohttp >= 3.9's about untyped application keys, Debian 13)
        journal = machine.run("journalctl", "-u", "ssdaq-web.service", "-o", "cat").stdout
        assert "Warning:" not in journal, journal
    finally:
        machine.run("systemctl", "stop", "ssdaq-web.service", "ssdaq-readout.service")
        ensure_listening(machine)
