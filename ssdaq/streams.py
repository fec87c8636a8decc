"""The stream registry: every stream ssdaq receives and publishes, declared once.

One record per stream: its name (which is also the receiver's name everywhere: ``ssdaq-NAME.service``,
``/etc/ssdaq/NAME.toml``, ``ssdaqctl NAME``, ``SSDAQ_RECEIVER=NAME``), the receiver class, the
input and its default port, the PUB port it is republished on, the message, the subscriber class
and whether ``ssdaq-writer`` records it. Receiver config defaults, ``ssdaq.subscribers``, the
writers, the simulators' default targets, the demo, ``ssdaqctl`` and the status overview read it;
the README's receiver table, ``units/`` and the ``ssdaq.receivers`` entry points are checked
against it by tests (``tests/test_streams.py``). Adding a stream is one record plus its receiver.

Classes are named as ``module:Class`` strings, not imported, so that reading the registry costs
nothing and pulls in no receiver (a test imports every one of them).
"""

from dataclasses import dataclass
from typing import Literal

#: where every PUB socket binds by default: a loopback address of its own, as the old SSDAQ did
PUB_IP = "127.0.0.101"
#: a writer's name is this prefix plus the stream it records (``writer-readout``)
WRITER_PREFIX = "writer-"

InputKind = Literal["udp", "tcp", "zmq-sub", "zmq-pull", "database"]


@dataclass(frozen=True)
class Stream:
    """One stream: where it comes from, where it is published, who reads and records it."""

    name: str
    #: the receiver, as ``package.module:Class``
    receiver: str
    #: what the receiver reads
    input: InputKind
    #: its default port (None: no port of its own, e.g. a database poll)
    input_port: int | None
    #: who sends the input, for the docs
    source: str
    #: TCP port of the PUB socket the stream is republished on
    pub_port: int
    #: what one published message is, for the docs
    message: str
    #: the typed subscriber in :mod:`ssdaq.subscribers` (``None``: none)
    subscriber: str | None = None
    #: ``ssdaq-writer NAME`` records it (``ssdaq-writer@NAME.service``)
    recorded: bool = False
    #: the input is a listening socket owned by ``ssdaq-NAME.socket`` (socket activation)
    socket_unit: bool = False
    #: the package ships ``ssdaq-NAME.service`` (else it runs by hand or as ``ssdaq-receiver@NAME``)
    has_unit: bool = True

    @property
    def listen_port(self) -> int:
        """The input port, for a stream that has one (ValueError otherwise)."""
        if self.input_port is None:
            raise ValueError(f"stream {self.name} has no input port")
        return self.input_port

    @property
    def input_text(self) -> str:
        """The input in words, as the README's receiver table shows it."""
        kind = {"udp": "UDP", "tcp": "TCP", "zmq-sub": "zmq SUB", "zmq-pull": "zmq PULL"}
        if self.input == "database":
            return self.source
        return f"{kind[self.input]} {self.input_port}: {self.source}"

    @property
    def unit(self) -> str:
        """The systemd service unit that runs the receiver."""
        return f"ssdaq-{self.name}.service"

    def input_endpoint(self, ip: str = PUB_IP) -> str:
        """The zmq endpoint of a zmq input (``zmq-pull``: the one the receiver binds)."""
        return f"tcp://{ip}:{self.input_port}"

    def endpoint(self, ip: str = PUB_IP, port: int | None = None) -> str:
        """The zmq endpoint of the stream's PUB socket (its standard port unless ``port``)."""
        return f"tcp://{ip}:{self.pub_port if port is None else port}"


#: in data-flow order (the order the tools list them in)
STREAMS: tuple[Stream, ...] = (
    Stream("readout", "ssdaq.receivers.readout_assembler:ReadoutAssembler", "udp", 17000,
           "the 32 modules", 9004, "SSReadout (16 416 B)",
           subscriber="ssdaq.subscribers:ReadoutSubscriber", recorded=True, socket_unit=True),
    Stream("trigger", "ssdaq.receivers.trigger_receiver:TriggerPacketReceiver", "udp", 8307,
           "the backplane", 9002, "trigger packet V1/V2/V3, byte for byte",
           subscriber="ssdaq.subscribers:TriggerSubscriber", recorded=True, socket_unit=True),
    Stream("timestamp", "ssdaq.receivers.timestamp_receiver:TimestampReceiver", "zmq-sub", 6666,
           "the timing board's PUB", 9003, "CDTS TriggerMessage",
           subscriber="ssdaq.subscribers:TimestampSubscriber", recorded=True),
    Stream("log", "ssdaq.receivers.log_receiver:LogReceiver", "tcp", 10001,
           "log senders (length-delimited LogData)", 9001, "chec.LogData",
           subscriber="ssdaq.subscribers:LogSubscriber", socket_unit=True),
    Stream("monitor", "ssdaq.receivers.monitor_receiver:MonitorReceiver", "zmq-pull", 10002,
           "every receiver's MonitorData", 9005, "chec.MonitorData",
           subscriber="ssdaq.subscribers:MonitorSubscriber"),
    Stream("teldata", "ssdaq.receivers.teldata_receiver:TelDataReceiver", "database", None,
           "telescope database (or static)", 9006, "chec.TelData",
           subscriber="ssdaq.subscribers:TelDataSubscriber"),
    # 9007, not 9100: 9100-9999 is Prometheus's exporter range (9100 is node_exporter's)
    Stream("relay", "ssdaq.receivers.relay:UDPRelay", "udp", 17100,
           "any UDP sender", 9007, "each datagram unchanged", has_unit=False),
)

_BY_NAME = {s.name: s for s in STREAMS}


def get(name: str) -> Stream:
    """The stream called ``name`` (KeyError naming the known ones otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; known: {', '.join(_BY_NAME)}") from None


def names() -> tuple[str, ...]:
    """Every stream's name, in data-flow order."""
    return tuple(_BY_NAME)


def endpoint(name: str, ip: str = PUB_IP, port: int | None = None) -> str:
    """The zmq endpoint of stream ``name``'s PUB socket."""
    return get(name).endpoint(ip, port)


def recorded() -> tuple[str, ...]:
    """The streams ``ssdaq-writer`` records."""
    return tuple(s.name for s in STREAMS if s.recorded)


def writer_name(stream: str) -> str:
    """The writer's name for logs, its config file, its command socket and ssdaqctl."""
    return f"{WRITER_PREFIX}{stream}"


def daemon_names() -> tuple[str, ...]:
    """Every daemon the package runs as a unit: the receivers, then the writers."""
    return tuple(s.name for s in STREAMS if s.has_unit) + tuple(writer_name(s) for s in recorded())
