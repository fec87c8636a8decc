"""ssdaq-web scraped by a real Prometheus while the receivers run, fed by the simulators.

Every receiver and a writer run as by ``make demo`` (their own processes, loopback, a private
runtime directory); ssdaq-web polls them; Debian's ``prometheus`` scrapes it every second and
evaluates a copy of the shipped alert rules whose ``for:`` is shortened to seconds. Through
Prometheus's query API: every daemon is up, the readout rate matches the simulator's, a module
stopped in the simulator shows as absent and fires its alert, a killed receiver shows as down and
fires its alert, and every expression of the rules and the dashboard returns data.
"""

import os
import random
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssdaq import streams
from ssdaq.daemons import RECEIVERS
from ssdaq.tools import demo
from tests.conftest import free_port
from tests.web.expressions import RULES, all_expressions
from tests.web.promserver import BINARY, Prometheus

pytestmark = pytest.mark.skipif(not os.access(BINARY, os.X_OK),
                                reason=f"{BINARY} is not installed (Debian: prometheus)")

RATE = 10.0  # readouts/s, the camera's
STOPPED_MODULE, STOP_AT_S = 5, 40.0  # after the 30 s of data the rate check needs
WRITER = "writer-readout"


def short_rules(path: Path) -> Path:
    """The shipped rules with every ``for:`` at 2 s, so that the alerts fire within the test."""
    path.write_text(re.sub(r"for: \w+", "for: 2s", RULES.read_text()))
    return path


@pytest.fixture
def daq(short_dir: Path) -> Iterator[tuple[demo.Processes, demo.Plan]]:
    """The six receivers and the readout writer, on a loopback address of their own."""
    ip = f"127.0.{random.randrange(10, 250)}.{random.randrange(2, 250)}"
    plan = demo.Plan(ip, 0, 60.0, short_dir / "data", short_dir)
    plan.runtime.mkdir()
    procs = demo.Processes(plan)
    try:
        for name in RECEIVERS:
            settings = demo.receiver_settings(name, plan)
            if name == "readout":
                # each module sends a datagram of 10 records a second: 3 missed is absent
                settings["assembler.module_timeout_s"] = 3.0
            cfg = demo.write_config(demo.receiver_class(name).config_class, settings,
                                    short_dir / f"{name}.toml")
            procs.start(name, ["-m", "ssdaq.core.main", streams.get(name).receiver, "--config",
                               str(cfg)])
        cfg = demo.write_config(demo.WRITER_CONFIGS["readout"], demo.writer_settings("readout", plan),
                                short_dir / f"{WRITER}.toml")
        procs.start(WRITER, ["-m", "ssdaq.tools.writer", "readout", "--config", str(cfg)])
        for name in [*RECEIVERS, WRITER]:
            procs.wait_ready(name, 60)
        yield procs, plan
    finally:
        procs.stop_all()


def test_prometheus_sees_every_receiver_the_rates_a_stopped_module_and_a_killed_receiver(
        daq: tuple[demo.Processes, demo.Plan], short_dir: Path) -> None:
    procs, plan = daq
    web_port = free_port(socket.SOCK_STREAM)
    (short_dir / "web.toml").write_text('[poll]\nunits = "none"\n[expect]\ndata_from = ["readout"]\n')
    procs.start("web", ["-m", "ssdaq.web.server", "--config", str(short_dir / "web.toml"),
                        "--listen", f"127.0.0.1:{web_port}"])
    prom = Prometheus(short_dir, free_port(socket.SOCK_STREAM), [f"127.0.0.1:{web_port}"],
                      short_rules(short_dir / "rules.yml"))
    try:
        daemons = {*RECEIVERS, WRITER}
        prom.wait(lambda: set(prom.values("ssdaq_up == 1")) == daemons, 30, f"{daemons} up")
        sim = ["-m", "ssdaq.simulators.cli"]
        procs.start("sim-tm", [*sim, "tm", "--rate", str(RATE), "--duration", "60", "--host",
                               plan.ip, "--port", "17000", "--stop-module", str(STOPPED_MODULE),
                               "--at", str(STOP_AT_S)])
        procs.start("sim-trigger", [*sim, "trigger", "--rate", "10", "--duration", "60",
                                    "--host", plan.ip, "--port", "8307"])
        prom.wait(lambda: prom.values('ssdaq_complete_total{receiver="readout"} > 0'), 30,
                  "the first readouts counted")
        flowing = time.monotonic()

        rate = 'rate(ssdaq_complete_total{receiver="readout"}[30s])'
        time.sleep(max(0.0, flowing + 31.0 - time.monotonic()))  # 30 s of readouts in the window
        assert abs(prom.values(rate)["readout"] - RATE) <= 0.2 * RATE, prom.values(
            rate.replace("complete", "incomplete"))

        victim = procs.procs["trigger"]
        victim.send_signal(signal.SIGKILL)  # its command socket stays: it should be running
        prom.wait(lambda: prom.values('ssdaq_up{receiver="trigger"}') == {"trigger": 0.0}, 15,
                  "the killed trigger receiver down")
        prom.wait(lambda: any(a["alertname"] == "SsdaqReceiverDown" and a.get("receiver") == "trigger"
                              for a in prom.firing()), 20, "SsdaqReceiverDown firing for trigger")

        prom.wait(lambda: prom.values("ssdaq_modules_present") == {"readout": 31.0}, 30,
                  "31 modules present")
        absent = prom.wait(lambda: [a for a in prom.firing() if a["alertname"] == "SsdaqModuleAbsent"],
                           20, "SsdaqModuleAbsent firing")
        assert [a["module"] for a in absent] == [str(STOPPED_MODULE)]
        assert prom.values("ssdaq_module_absent == 1", "module") == {str(STOPPED_MODULE): 1.0}

        empty = {label: expr for label, expr in all_expressions().items() if not prom.query(expr)}
        assert empty == {}, "expressions without data"
    finally:
        prom.close()
