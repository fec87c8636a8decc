"""``ssdaqctl``'s own verbs, declared once.

``ssdaqctl VERB ...`` acts on the DAQ as a whole; any other first word names a receiver or writer
(``ssdaqctl NAME COMMAND``). The table is the one place a verb is declared: ``ssdaqctl`` builds
its usage, help and dispatch from it, and ``ssdaq-receiver`` refuses these words as receiver
names (a receiver called ``status`` could never be reached). It lives outside ``ssdaq.core`` and
``ssdaq.tools`` so that both can read it without the framework importing a tool.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    """One verb: its name, what follows it on the command line, one line of help."""

    name: str
    arguments: str
    help: str


VERBS: tuple[Verb, ...] = (
    Verb("status", "[--json]", "every receiver and writer: unit state, health, rates, last data, "
         "absent modules; exit 1 when something running is unhealthy"),
    Verb("start", "NAME|all", "start a receiver or writer (with its socket) through systemctl"),
    Verb("stop", "NAME|all", "stop a receiver or writer together with its socket"),
    Verb("restart", "NAME|all", "restart behind the open socket: nothing sent meanwhile is lost"),
    Verb("list", "", "the registered receiver names, as JSON"),
    Verb("run", "start|stop|status [--obs-id N] [--comment TEXT]",
         "observations: every running writer closes its file and records the run into "
         "<prefix>_obs<id>_<UTC start>_<chunk>.hdf5 until stop (status: the open run)"),
)

NAMES: tuple[str, ...] = tuple(v.name for v in VERBS)
