"""Settings of the ``ssdaq-writer`` services: what each subscribes to and how files are written.

Kept apart from :mod:`ssdaq.receivers.writer` (the service, which needs h5py) so that the command
line, ``make configs`` and the demo can read them without h5py.
"""

from dataclasses import dataclass
from typing import Any

from ssdaq import streams
from ssdaq.core.config import setting, table
from ssdaq.core.settings import ReceiverConfig

DEFAULT_DATA_DIR = "/var/lib/ssdaq/data"
MiB = 1024 * 1024
RECORD_MODES = ("continuous", "runs")
#: the streams a writer records (the registry's recorded ones; CONFIGS has a layout for each)
STREAMS = streams.recorded()


@dataclass(frozen=True)
class Subscription:
    """A published stream the writer subscribes to."""

    endpoint: str = setting("", help="zmq endpoint of the receiver's PUB socket (connected to);\n"
                                     "empty: do not subscribe")
    rcvhwm: int = setting(
        100_000, help="Messages zmq may queue for the writer while it writes; beyond, the PUB\n"
                      "drops them (counted as missed for readouts, by their numbers)", min=1)


def subscription(stream: str, help: str = "") -> Any:
    return table(Subscription, help=help or f"The {stream} stream", endpoint=streams.endpoint(stream))


@dataclass(frozen=True)
class OutputSettings:
    """Where and how files are written."""

    directory: str = setting(
        "", help="Directory of the files; empty: $STATE_DIRECTORY/<stream> (under systemd\n"
                 f"{DEFAULT_DATA_DIR}/<stream>), else {DEFAULT_DATA_DIR}/<stream>")
    prefix: str = setting("", help="File names are <prefix>_<UTC start time>.hdf5 (in observations\n"
                                   "<prefix>_obs<id>_<UTC run start>_<chunk>.hdf5); empty: the stream name")
    max_file_bytes: int = setting(1024 * MiB, help="Start a new file once a file reaches this size",
                                  min=1)
    max_file_age_s: float = setting(3600.0, help="Start a new file once a file is this old", min=1.0)
    flush_interval_s: float = setting(
        2.0, help="Write what was received at least this often: a crash loses at most this much\n"
                  "(a stop loses nothing)", min=0.05, max=60.0)
    flush_bytes: int = setting(8 * MiB, help="Write earlier once this much is waiting", min=1)
    compression_level: int = setting(4, help="gzip level (0: no compression)", min=0, max=9)
    min_free_bytes: int = setting(
        256 * MiB, help="Free space to leave on the filesystem: below it (plus what is about to be\n"
                        "written) writing stops, the file is closed, and data is held in memory\n"
                        "until space returns", min=0)
    max_buffer_bytes: int = setting(
        256 * MiB, help="Data held in memory while the disk is full; beyond, the oldest is\n"
                        "dropped (counted as disk_full)", min=MiB)


@dataclass(frozen=True)
class RunSettings:
    """Observations (ssdaqctl run start|stop): what is recorded outside them."""

    record: str = setting(
        "continuous", choices=RECORD_MODES,
        help="Outside observations: \"continuous\" records everything (files named by their start\n"
             "time), \"runs\" records nothing; in observations files are\n"
             "<prefix>_obs<id>_<UTC run start>_<chunk>.hdf5 either way")


@dataclass(frozen=True)
class LedgerSettings:
    """The loss ledger: the upstream receivers' counters, stored in every file."""

    poll_interval_s: float = setting(
        1.0, help="Read the upstream receivers' counters this often (and at every file's start and\n"
                  "end), so that a receiver restarted inside a file is noticed", min=0.1, max=60.0)
    timeout_s: float = setting(0.5, help="How long an upstream receiver may take to answer",
                               min=0.05, max=10.0)


@dataclass(frozen=True)
class WriterConfig(ReceiverConfig):
    """Settings every writer has."""

    output: OutputSettings = table(OutputSettings)
    run: RunSettings = table(RunSettings)
    ledger: LedgerSettings = table(LedgerSettings)


@dataclass(frozen=True)
class ReadoutInputs:
    """Streams the slow-signal writer subscribes to."""

    readout: Subscription = subscription("readout", "Slow-signal readouts: /SlowSignal/readout")
    teldata: Subscription = subscription(
        "teldata", "Telescope pointing: /SlowSignal/tel_table (endpoint empty: table stays empty)")


@dataclass(frozen=True)
class TriggerInputs:
    """Streams the trigger writer subscribes to."""

    trigger: Subscription = subscription("trigger", "Trigger packets: /Trigger/packet and /Trigger/raw")


@dataclass(frozen=True)
class TimestampInputs:
    """Streams the timestamp writer subscribes to."""

    timestamp: Subscription = subscription("timestamp", "CDTS TriggerMessages: /Timestamp/trigger")


@dataclass(frozen=True)
class ReadoutWriterConfig(WriterConfig):
    """Settings of ``ssdaq-writer readout``."""

    inputs: ReadoutInputs = table(ReadoutInputs)


@dataclass(frozen=True)
class TriggerWriterConfig(WriterConfig):
    """Settings of ``ssdaq-writer trigger``."""

    inputs: TriggerInputs = table(TriggerInputs)


@dataclass(frozen=True)
class TimestampWriterConfig(WriterConfig):
    """Settings of ``ssdaq-writer timestamp``."""

    inputs: TimestampInputs = table(TimestampInputs)


CONFIGS: dict[str, type[WriterConfig]] = {
    "readout": ReadoutWriterConfig, "trigger": TriggerWriterConfig, "timestamp": TimestampWriterConfig,
}
#: the service class of each stream, as ``ssdaq-receiver`` resolves it
CLASSES = {"readout": "ReadoutWriter", "trigger": "TriggerWriter", "timestamp": "TimestampWriter"}


#: the writer's name for logs, its config file and its command socket: writer-STREAM
service_name = streams.writer_name
