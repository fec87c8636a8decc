"""Reloading a receiver's configuration (SIGHUP or ``ssdaqctl NAME reload``): all or nothing.

The whole new file is loaded and validated (declared settings, then the receiver's ``on_reload``,
which raises ``ConfigError`` before it changes anything) before anything is swapped; a rejected
file leaves the old configuration in force and says why in the journal, the reply and ``STATUS=``.
Settings in the configuration class's ``restart_only`` are taken into the configuration but act
only after a restart, and the reply and ``STATUS=`` say so.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ssdaq.core import config as configlib
from ssdaq.core import logging as sslogging
from ssdaq.core import systemd
from ssdaq.core.counters import Counters
from ssdaq.core.errors import CommandError, ConfigError
from ssdaq.core.health import Health
from ssdaq.core.mon_sender import Monitoring
from ssdaq.core.settings import ReceiverConfig

C = TypeVar("C", bound=ReceiverConfig)


def restart_only_changes(old: ReceiverConfig, new: ReceiverConfig) -> list[str]:
    """The settings of ``type(new).restart_only`` that differ between ``old`` and ``new``."""
    return [k for k in type(new).restart_only if getattr(old, k, None) != getattr(new, k, None)]


async def load_new(old: C, path: str, validate: Callable[[C, C], Awaitable[None]]) -> C:
    """The configuration in ``path``, of ``old``'s class, accepted by ``validate(old, new)``."""
    new = configlib.load(type(old), path)
    await validate(old, new)
    return new


class Reloader:
    """Runs one reload with ``RELOADING=1`` … ``READY=1`` around it, and applies the settings the
    framework itself uses (log level, warning interval, monitor sender)."""

    def __init__(self, log: logging.Logger, health: Health, counters: Counters,
                 monitoring: Monitoring) -> None:
        self.log, self.health, self.counters, self.monitoring = log, health, counters, monitoring

    async def reload(self, old: C, path: str | None,
                     validate: Callable[[C, C], Awaitable[None]]) -> tuple[C, str]:
        """(the configuration now in force, the reply text); raises ``CommandError`` (the old
        configuration stays) when ``path`` or ``validate`` (the receiver's ``on_reload``) rejects it."""
        systemd.notify("RELOADING=1", f"MONOTONIC_USEC={systemd.monotonic_usec()}")
        try:
            if path is None:
                return old, "no configuration file: nothing to reload"
            try:
                new = await load_new(old, path, validate)
            except ConfigError as e:
                self.health.note = f"reload rejected, old config kept: {e}"
                self.log.error("%s", self.health.note,
                               extra={"SSDAQ_CONFIG_FILE": e.file, "SSDAQ_CONFIG_KEY": e.key})
                raise CommandError(self.health.note) from None
            sslogging.set_level(new.log.level)
            self.counters.interval_s = new.log.rate_limit_interval_s
            self.monitoring.reconfigure(old.monitor, new.monitor)
            stale = restart_only_changes(old, new)
            self.health.note = f"restart needed for: {', '.join(stale)}" if stale else ""
            if stale:
                self.log.warning("configuration reloaded; %s", self.health.note)
            else:
                self.log.info("configuration reloaded from %s", path)
            return new, "reloaded" + (f"; {self.health.note}" if stale else "")
        finally:
            systemd.notify("READY=1", f"STATUS={self.health.text()}")
