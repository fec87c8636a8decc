"""The commands every receiver answers besides its own ``cmd_*``: ping, help, status, reload, config.

A receiver's own ``cmd_NAME`` of the same name wins (the table is built with it last).
"""

import os
import time
from typing import TYPE_CHECKING, Any

from ssdaq.core import commands, process_stats
from ssdaq.core import config as configlib
from ssdaq.core.health import Health
from ssdaq.core.mon_sender import Monitoring

if TYPE_CHECKING:
    from ssdaq.core.receiver_server import ReceiverServer


class StandardCommands:
    """The built-in commands of ``receiver``, whose ``health`` and ``monitoring`` they report."""

    def __init__(self, receiver: "ReceiverServer[Any]", health: Health, monitoring: Monitoring) -> None:
        self.receiver, self.health, self.monitoring = receiver, health, monitoring

    def cmd_ping(self) -> str:
        """Answer pong: the receiver's loop is alive."""
        return "pong"

    def cmd_help(self) -> dict[str, str]:
        """List the commands with the first line of their description."""
        return commands.describe(self.receiver.cmds)

    def cmd_status(self) -> dict[str, Any]:
        """Every counter, rate and publisher statistic, as JSON."""
        rx = self.receiver
        return {
            "name": rx.service,
            "class": type(rx).__name__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.health.started, 3),
            "config_file": rx.config_file,
            **self.health.report(),
            "publishers": [p.stats() for p in rx.publishers],
            "monitor": self.monitoring.stats(),
            "process": process_stats.figures(),
            **rx.status_fields(),
        }

    async def cmd_reload(self) -> str:
        """Re-read the configuration file and apply what can change live (as SIGHUP does)."""
        return await self.receiver.reload()

    def cmd_config(self) -> str:
        """The configuration in effect, as TOML (what --print-config shows)."""
        return configlib.render(self.receiver.config)
