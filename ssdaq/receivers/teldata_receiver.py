"""TelDataReceiver (``ssdaq-receiver teldata``): the telescope pointing as chec.TelData, every N s.

The source is configuration (:mod:`ssdaq.receivers.teldata_sources`): ``static`` publishes a
fixed pointing (sites without a telescope database, the demo); ``mysql`` queries the telescope
database. The old receiver blocked its event loop on the database and kept the password in its
source; here each poll runs in one worker thread with a timeout, and the password is the systemd
credential named in the config (``LoadCredential=``), never a file in /etc/ssdaq.

A poll that fails is counted (``db_errors``, ``no_data``, ``bad_row``, ``timeouts``) and logged,
rate-limited, and the next poll tries again. Without its credential (or PyMySQL) the mysql source
cannot start: that is one error line in the journal and in ``STATUS=``, then the receiver idles,
publishing nothing, healthy, until a reload brings the credential; systemd does not restart it
in a loop.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ssdaq import streams
from ssdaq.core.config import setting, table, tables
from ssdaq.core.receiver_server import ReceiverServer
from ssdaq.core.settings import PublisherSettings, ReceiverConfig, zmq_publisher
from ssdaq.data.messages import tel_data
from ssdaq.receivers.teldata_sources import (
    MySQLSettings,
    MySQLSource,
    Pointing,
    SourceError,
    StaticSettings,
    StaticSource,
    read_credential,
)

STREAM = streams.get("teldata")
POLL_FAILURES = ("db_errors", "no_data", "bad_row", "timeouts")


@dataclass(frozen=True)
class TelDataConfig(ReceiverConfig):
    """Settings of the telescope data receiver."""

    source: str = setting(
        "static",
        help="static: the fixed pointing of [static]; mysql: the query of\n"
        "[mysql] on the telescope database",
        choices=("static", "mysql"),
    )
    interval_s: float = setting(15.0, help="Seconds between two polls", min=0.1)
    timeout_s: float = setting(
        5.0, help="A poll taking longer is abandoned and counted (timeouts)", min=0.1
    )
    static: StaticSettings = table(StaticSettings)
    mysql: MySQLSettings = table(MySQLSettings)
    publishers: tuple[PublisherSettings, ...] = tables(
        zmq_publisher(STREAM.pub_port), help="Publishers: every pointing goes to each of them, as chec.TelData"
    )


class TelDataReceiver(ReceiverServer[TelDataConfig]):
    """Polls the configured pointing source and publishes chec.TelData."""

    config_class = TelDataConfig
    service_name = "teldata"
    counter_names = POLL_FAILURES

    def __init__(
        self,
        ip: str = "",
        port: int = 0,
        publishers: list | None = None,
        name: str = "TelDataReceiver",
    ) -> None:
        super().__init__(ip, port, publishers, name)
        self._setup = True
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="teldata-poll")
        self._poll: asyncio.Future | None = None
        self.last: Pointing | None = None
        self.source: StaticSource | MySQLSource | None = None
        self.problem = ""  # why there is no source: shown in status and STATUS=
        self._open_source()

    @classmethod
    def from_config(cls, config: ReceiverConfig) -> "TelDataReceiver":
        return cls()

    def _open_source(self) -> None:
        config = self.config
        try:
            if config.source == "mysql":
                password = read_credential(config.mysql.credential)
                self.source = MySQLSource(config.mysql, password, config.timeout_s)
            else:
                self.source = StaticSource(config.static)
        except SourceError as e:
            self.source, self.problem = None, f"{e}; not polling"
            key = "mysql.credential" if e.reason == "no_credential" else "source"
            self.log.error("%s", self.problem, extra={"SSDAQ_CONFIG_KEY": key})
            return
        self.problem = ""
        self.log.info("pointing from %s every %g s", self.source.describe(), config.interval_s)

    async def on_reload(self, old: TelDataConfig, new: TelDataConfig) -> None:
        if self.source is None or (old.source, old.static, old.mysql, old.timeout_s) != (
            new.source,
            new.static,
            new.mysql,
            new.timeout_s,
        ):
            self._close_source()
            self._open_source()

    async def ct_poll(self) -> None:
        next_at = time.monotonic()
        while True:
            await self.poll()
            next_at = max(next_at + self.config.interval_s, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def poll(self) -> None:
        """Read the source once in the worker thread and publish what it returned."""
        if self.source is None:
            return
        if self._poll is not None and not self._poll.done():
            self.counters.report("timeouts", detail="the previous poll is still running")
            return
        self._poll = self.loop.run_in_executor(self._executor, self.source.read)
        try:
            point = await asyncio.wait_for(asyncio.shield(self._poll), self.config.timeout_s)
        except TimeoutError:
            self.counters.report("timeouts", detail=f"no answer within {self.config.timeout_s:g} s")
            return
        except SourceError as e:
            self.counters.report(e.reason, detail=str(e))
            return
        self.counters.values["received"] += 1
        self.last = point
        self.publish_nowait(tel_data(point.ra, point.dec, point.time_ns).SerializeToString())

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    async def on_stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._close_source()

    def status_fields(self) -> dict[str, Any]:
        last = (
            None
            if self.last is None
            else {
                "time": datetime.fromtimestamp(self.last.time_ns / 1e9, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "ra_deg": self.last.ra,
                "dec_deg": self.last.dec,
            }
        )
        return {
            "source": self.source.describe() if self.source else None,
            "problem": self.problem or None,
            "last_pointing": last,
        }

    def status_line(self) -> str:
        if self.source is None:
            return f"idle: {self.problem}"
        last = (
            "no pointing yet"
            if self.last is None
            else f"ra {self.last.ra:.4f}, dec {self.last.dec:.4f}"
        )
        return f"{self.source.describe()}: {last}; {self.lost_summary()}"
