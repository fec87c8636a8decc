"""Reload: the whole file validated before the swap, restart-only settings named, notifications around it."""

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import zmq.asyncio

from ssdaq.core import logging as sslogging
from ssdaq.core import reload
from ssdaq.core.counters import Counters
from ssdaq.core.errors import CommandError, ConfigError
from ssdaq.core.health import Health
from ssdaq.core.mon_sender import Monitoring
from ssdaq.core.reload import Reloader
from ssdaq.receivers.readout_assembler import ReadoutConfig
from ssdaq.receivers.relay import RelayConfig
from ssdaq.receivers.trigger_receiver import TriggerConfig
from tests.sdnotify import NotifyListener

LOG = logging.getLogger("ssdaq.test")


async def accept(old: RelayConfig, new: RelayConfig) -> None:
    pass


async def refuse(old: RelayConfig, new: RelayConfig) -> None:
    raise ConfigError("relay.toml", "max_datagram_bytes", "the receiver refuses it")


def test_load_new_is_the_file_of_the_old_class_once_the_receiver_accepts_it(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("max_datagram_bytes = 1500\n")
    new = asyncio.run(reload.load_new(RelayConfig(), str(path), accept))
    assert new == RelayConfig(max_datagram_bytes=1500)
    with pytest.raises(ConfigError, match="the receiver refuses it"):
        asyncio.run(reload.load_new(RelayConfig(), str(path), refuse))
    path.write_text("max_datagram_bytes = 0\n")
    with pytest.raises(ConfigError, match=r"max_datagram_bytes: expected integer in \[1, 65535\]"):
        asyncio.run(reload.load_new(RelayConfig(), str(path), accept))


def test_restart_only_changes_name_the_tables_that_need_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("max_datagram_bytes = 1500\n[[publishers]]\nport = 9999\n")
    new = asyncio.run(reload.load_new(RelayConfig(), str(path), accept))
    assert reload.restart_only_changes(RelayConfig(), new) == ["publishers"]


def test_a_reader_made_at_start_names_its_settings_as_needing_a_restart() -> None:
    """The trigger and readout readers are made once: a reload must not say it applied them."""
    old = TriggerConfig()
    assert reload.restart_only_changes(old, replace(old, batch=32, coalesce_us=0)) == \
        ["batch", "coalesce_us"]
    assert reload.restart_only_changes(old, replace(old, batch_scheduling=False)) == []
    ro = ReadoutConfig()
    assert reload.restart_only_changes(ro, replace(ro, coalesce_us=0, max_datagram_bytes=1500)) == \
        ["max_datagram_bytes", "coalesce_us"]


def test_reloader_swaps_or_keeps_the_old_and_says_so(
        tmp_path: Path, notify: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    path = tmp_path / "relay.toml"
    counters = Counters(LOG)
    health = Health(LOG, counters, lambda: "idle", lambda: None, lambda: None, lambda: None)
    context = zmq.asyncio.Context()
    loop = asyncio.new_event_loop()
    monitoring = Monitoring("UDPRelay", loop, context, lambda: 0)
    reloader = Reloader(LOG, health, counters, monitoring)
    old = RelayConfig()
    try:
        path.write_text("[log]\nrate_limit_interval_s = 2.5\n[[publishers]]\nport = 9999\n")
        new, reply = loop.run_until_complete(reloader.reload(old, str(path), accept))
        assert reply == "reloaded; restart needed for: publishers" and counters.interval_s == 2.5
        assert new.publishers[0].port == 9999
        assert notify.wait_for("RELOADING", "1")["MONOTONIC_USEC"].isdigit()
        assert notify.wait_for("READY", "1")["STATUS"] == "idle; restart needed for: publishers"

        with pytest.raises(CommandError, match="reload rejected, old config kept: .*refuses it"):
            loop.run_until_complete(reloader.reload(new, str(path), refuse))
        assert "reload rejected" in notify.wait_for("READY", "1")["STATUS"]
        assert loop.run_until_complete(reloader.reload(new, None, accept)) == (
            new, "no configuration file: nothing to reload")
    finally:
        loop.close()
        context.destroy(linger=0)


def test_a_level_given_on_the_command_line_outlasts_a_reload(tmp_path: Path) -> None:
    """``--log-level warning`` stays in force when a reload applies the file (which says info,
    the default); without it, the file's level is applied."""
    logger = logging.getLogger("ssdaq")
    before = logger.level
    try:
        sslogging.pin_level("warning")
        sslogging.set_level("info")
        assert logger.level == logging.WARNING
        sslogging.pin_level(None)
        sslogging.set_level("info")
        assert logger.level == logging.INFO
    finally:
        sslogging.pin_level(None)
        logger.setLevel(before)
