"""A small live DAQ for the page's tests and benchmark: the readout, trigger and timestamp
receivers and ssdaq-web as their own processes on loopback (free ports, a private runtime
directory, a real notify socket), fed by the simulators run as ``ssdaq-sim``."""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssdaq import streams
from tests.conftest import ROOT, child_env, free_port, receiver_argv, stop
from tests.daemons import NotifyDrain
from tests.sdnotify import NotifyListener
from tests.simulators import sim_argv

QUIET = "start_hold_s = 0.0\n[monitor]\nenabled = false\n"


@dataclass
class LiveDaq:
    """The processes, their ports, and how to reach them."""

    work: Path
    module_timeout_s: float = 1.0
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runtime = self.work / "run"
        self.runtime.mkdir()
        self.notify = NotifyListener(str(self.work / "notify.sock"))
        self.drain = NotifyDrain(self.notify)
        tcp = socket.SOCK_STREAM
        self.ports = {"readout_in": free_port(), "readout_pub": free_port(tcp),
                      "trigger_in": free_port(), "trigger_pub": free_port(tcp),
                      "board": free_port(tcp), "timestamp_pub": free_port(tcp),
                      "http": free_port(tcp)}
        self.env = child_env(NOTIFY_SOCKET=self.notify.path, RUNTIME_DIRECTORY=str(self.runtime))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}/"

    @property
    def readout_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.ports['readout_pub']}"

    def configs(self) -> dict[str, str]:
        p = self.ports

        def pub(port: int) -> str:
            return f'[[publishers]]\nip = "127.0.0.1"\nport = {port}\n'

        return {
            "readout": QUIET + f"[assembler]\nmodule_timeout_s = {self.module_timeout_s}\n"
            + f'[sockets.data]\nip = "127.0.0.1"\nport = {p["readout_in"]}\n' + pub(p["readout_pub"]),
            "trigger": QUIET + f'[sockets.data]\nip = "127.0.0.1"\nport = {p["trigger_in"]}\n'
            + pub(p["trigger_pub"]),
            "timestamp": QUIET + f'[timing_board]\nendpoint = "tcp://127.0.0.1:{p["board"]}"\n'
            + "reconnect_ivl_s = 0.05\nreconnect_ivl_max_s = 0.3\n" + pub(p["timestamp_pub"]),
        }

    def web_config(self, **page: Any) -> str:
        settings = {"readout_endpoint": self.readout_endpoint, **page}
        return (f'[sockets.http]\nip = "127.0.0.1"\nport = {self.ports["http"]}\n[page]\n'
                + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def _start(self, name: str, argv: list[str], ready: bool = True) -> subprocess.Popen:
        with open(self.log(name), "w") as err:  # a file: a pipe nobody reads would fill up
            proc = subprocess.Popen(argv, env=self.env, cwd=ROOT, stderr=err,
                                    stdout=subprocess.DEVNULL)
        self.procs[name] = proc
        if ready:
            self.drain.wait_for("READY", "1", proc.pid, timeout=30)
        return proc

    def start_daq(self, **page: Any) -> None:
        """The three receivers and ssdaq-web, each once it sent READY=1."""
        for name, text in self.configs().items():
            path = self.work / f"{name}.toml"
            path.write_text(text)
            self._start(name, receiver_argv(streams.get(name).receiver, "--config", str(path)), ready=False)
        (self.work / "web.toml").write_text(self.web_config(**page))
        self._start("web", [sys.executable, "-m", "ssdaq.web.server", "--config",
                            str(self.work / "web.toml")], ready=False)
        for name in ("readout", "trigger", "timestamp", "web"):
            self.drain.wait_for("READY", "1", self.procs[name].pid, timeout=30)

    def start_simulators(self, duration_s: float, rate: float = 10.0, tack0: int = 10**18,
                         tm: tuple[str, ...] = ()) -> None:
        """The camera's modules (one record per packet: a readout every 1/rate s), the trigger
        backplane and the timing board, all for ``duration_s``."""
        d, r, p = f"{duration_s:g}", f"{rate:g}", self.ports
        self._start("sim-tm", sim_argv("tm", "--rate", r, "--records-per-packet", "1",
                                       "--duration", d, "--tack0", str(tack0), "--port",
                                       str(p["readout_in"]), *tm), ready=False)
        self._start("sim-trigger", sim_argv("trigger", "--version", "2", "--rate", r,
                                            "--duration", d, "--port", str(p["trigger_in"])),
                    ready=False)
        self._start("sim-timing", sim_argv("timing", "--bind", f"tcp://127.0.0.1:{p['board']}",
                                           "--rate", r, "--duration", d, "--wait-subscriber",
                                           "10"), ready=False)

    def wait_simulators(self, timeout_s: float) -> None:
        for name in ("sim-tm", "sim-trigger", "sim-timing"):
            assert self.procs[name].wait(timeout_s) == 0, self.log(name).read_text()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=5) as r:
            return json.loads(r.read())

    def ctl_status(self) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "ssdaq.tools.ctl", "status", "--json"],
                              env=self.env, capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                stop(proc, 30)
        self.drain.close()
        self.notify.close()


def make(module_timeout_s: float = 1.0) -> LiveDaq:
    return LiveDaq(Path(tempfile.mkdtemp(prefix="ssdaq-", dir="/tmp")), module_timeout_s)


def remove(daq: LiveDaq) -> None:
    daq.close()
    shutil.rmtree(daq.work, ignore_errors=True)


def wait_until(check: Any, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(every_s)
    return result
