"""The ``[assembler]`` settings of event building, declared once, and the check of their values.

Kept apart from the event builder (:mod:`ssdaq.data.event_builder`) because the configuration
(``ssdaq.receivers.readout_assembler``'s schema, the rendered ``readout.toml``) reads the
declaration, while only the builder needs the algorithm.
"""

from dataclasses import dataclass

from ssdaq.data.slowsignal import TACK_LIMIT
from ssdaq.schema import setting


@dataclass(frozen=True)
class AssemblerSettings:
    """Event building: which records form one readout, and how long a readout waits."""

    readout_window_ns: int = setting(
        10_000_000, help="Records whose TACKs differ by less than this belong to one readout;\n"
        "keep it below half the spacing of readouts", min=1)
    max_wait_s: float = setting(
        0.5, help="A readout missing a live module is published this long after it opened", min=0.001)
    module_timeout_s: float = setting(
        5.0, help="A module silent this long is absent: readouts stop waiting for it until it sends",
        min=0.01)
    max_open_readouts: int = setting(
        1000, help="Readouts being built at once; beyond it the oldest is published early (evicted)",
        min=1, max=1_000_000)
    closed_history: int = setting(
        4096, help="Published readouts remembered to tell late and duplicate records", min=1)
    tack_reset_ns: int = setting(
        10_000_000_000, help="A backwards TACK jump larger than this is a counter reset, not late data",
        min=1)
    relaxed_ip_range: bool = setting(
        False, help="Old rule for senders outside .100-.131: slot = last octet % 100 % 32")


def check(s: AssemblerSettings) -> None:
    """Reject settings the builder cannot work with (the declared ranges check only files)."""
    for name in ("readout_window_ns", "max_open_readouts", "closed_history", "tack_reset_ns"):
        if not 1 <= getattr(s, name) <= TACK_LIMIT:
            raise ValueError(f"{name} must be in 1..2**62, got {getattr(s, name)}")
    for name in ("max_wait_s", "module_timeout_s"):
        if not getattr(s, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(s, name)}")
