"""The stream registry against everything that repeats one of its facts: receivers, subscribers,
writers, the README, the operations notes, units/ and debian/rules."""

import configparser
import importlib
import re
from pathlib import Path

import pytest

from ssdaq import streams, subscribers
from ssdaq.core.counters import CATALOGUE
from ssdaq.core.main import registered
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.receivers.writer_config import CONFIGS as WRITER_CONFIGS

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "units"
LISTEN = {"udp": "ListenDatagram", "tcp": "ListenStream"}


def load(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def test_the_original_ssdaq_port_table_is_kept() -> None:
    """Wire compatibility: the old subscribers connect to these ports (reference, port table)."""
    assert {s.name: s.pub_port for s in streams.STREAMS if s.name != "relay"} == {
        "log": 9001, "trigger": 9002, "timestamp": 9003, "readout": 9004, "monitor": 9005,
        "teldata": 9006}
    assert {s.name: s.input_port for s in streams.STREAMS} == {
        "readout": 17000, "trigger": 8307, "timestamp": 6666, "log": 10001, "monitor": 10002,
        "teldata": None, "relay": 17100}


def test_no_pub_port_is_in_prometheus_exporter_range() -> None:
    assert all(not 9100 <= s.pub_port <= 9999 for s in streams.STREAMS)
    assert len({s.pub_port for s in streams.STREAMS}) == len(streams.STREAMS)


@pytest.mark.parametrize("stream", streams.STREAMS, ids=lambda s: s.name)
def test_receiver_defaults_come_from_the_registry(stream: streams.Stream) -> None:
    cls = load(stream.receiver)
    assert issubclass(cls, ReceiverServer)
    assert registered()[stream.name] == stream.receiver
    config = cls.config_class()
    assert [p.port for p in config.publishers] == [stream.pub_port]
    if stream.input in LISTEN:
        assert config.sockets.data.port == stream.input_port
    assert set(cls.counter_names) <= set(CATALOGUE), "every counter is declared in the catalogue"


@pytest.mark.parametrize("stream", streams.STREAMS, ids=lambda s: s.name)
def test_the_registry_names_each_streams_subscriber(stream: streams.Stream) -> None:
    if stream.subscriber is None:
        assert stream.name not in subscribers.SUBSCRIBERS
        return
    cls = load(stream.subscriber)
    assert cls.stream == stream.name and subscribers.SUBSCRIBERS[stream.name] is cls
    with cls() as sub:
        assert sub.endpoint == stream.endpoint()


def test_a_writer_exists_for_every_recorded_stream() -> None:
    assert tuple(WRITER_CONFIGS) == streams.recorded()
    for stream in streams.recorded():
        endpoints = {f.endpoint for f in vars(WRITER_CONFIGS[stream]().inputs).values()}
        assert streams.endpoint(stream) in endpoints


def test_the_readme_receiver_table_is_the_registry() -> None:
    rows = [f"| `{s.name}` | `{s.receiver.partition(':')[2]}` | {s.input_text} | `{s.endpoint()}` "
            f"| {s.message} |" for s in streams.STREAMS]
    table = "\n".join(["| name | class | input | published on | message |", "|---|---|---|---|---|",
                       *rows])
    assert table in (ROOT / "README.md").read_text(), "README.md's receiver table drifted"


def test_the_operations_notes_list_every_packaged_receiver_with_its_ports() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for stream in streams.STREAMS:
        row = next((line for line in text.splitlines() if line.startswith(f"| {stream.name} |")),
                   None)
        if not stream.has_unit:
            assert row is None, f"{stream.name} has no unit and is not installed as one"
            continue
        assert row is not None, f"docs/operations.md has no row for {stream.name}"
        assert f":{stream.pub_port}`" in row and stream.unit.removesuffix(".service") in row
        if stream.input_port is not None:
            assert str(stream.input_port) in row


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


@pytest.mark.parametrize("stream", streams.STREAMS, ids=lambda s: s.name)
def test_units_agree_with_the_registry(stream: streams.Stream) -> None:
    service, socket = UNITS / stream.unit, UNITS / f"ssdaq-{stream.name}.socket"
    assert service.exists() == stream.has_unit
    assert socket.exists() == stream.socket_unit
    if stream.socket_unit:
        listen = unit(socket)["Socket"][LISTEN[stream.input]]
        assert listen.rsplit(":", 1)[1] == str(stream.input_port)


def test_every_shipped_receiver_unit_is_a_registered_stream() -> None:
    named = {p.name.removeprefix("ssdaq-").removesuffix(".service")
             for p in UNITS.glob("ssdaq-*.service") if "@" not in p.name}
    assert named <= {s.name for s in streams.STREAMS if s.has_unit} | {"web"}


def test_debian_rules_installs_the_registrys_units() -> None:
    rules = (ROOT / "debian" / "rules").read_text().replace("\\\n", " ")

    def listed(var: str) -> set[str]:
        match = re.search(rf"^{var}\s*=(.*)$", rules, re.M)
        assert match, f"debian/rules has no {var}"
        return set(match.group(1).split())

    assert {f"ssdaq-{s.name}.socket" for s in streams.STREAMS if s.socket_unit} <= listed("SOCKETS")
    assert {s.unit for s in streams.STREAMS if s.has_unit} <= listed("RECEIVERS")
