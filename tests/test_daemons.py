"""ssdaq.daemons: what a receiver's unit state is called, from systemd's properties."""

import os

import pytest

from ssdaq import daemons
from ssdaq.daemons import ReceiverState, socket_of

LISTENING = {"LoadState": "loaded", "ActiveState": "active", "SubState": "listening"}


@pytest.mark.parametrize(("service", "socket", "reply", "error", "activity"), [
    ({"ActiveState": "active"}, LISTENING, {"health": "ok"}, None, "active"),
    # its socket listens and no datagram has started it: a camera that is off
    ({"ActiveState": "inactive"}, LISTENING, None, None, "idle"),
    ({"ActiveState": "failed"}, LISTENING, None, None, "failed"),
    ({"ActiveState": "inactive"}, {}, None, None, "inactive"),
    # without systemd: running while its command socket exists, answering or not
    ({}, {}, {"health": "ok"}, None, "active"),
    ({}, {}, None, "no answer from /run/ssdaq/x.ctl within 0.5 s", "active"),
    ({}, {}, None, None, "inactive"),
])
def test_activity_says_active_idle_failed_or_inactive(
        service: dict, socket: dict, reply: dict | None, error: str | None, activity: str) -> None:
    state = ReceiverState("readout", "ssdaq-readout.service", service, reply, error, socket)
    assert state.activity == activity


def test_writers_have_no_socket_unit() -> None:
    assert socket_of("writer-readout") is None
    assert socket_of("readout") == "ssdaq-readout.socket"
    assert socket_of("camera2") == "ssdaq-receiver@camera2.socket"


def test_systemd_manages_ssdaq_only_where_its_units_are_installed(tmp_path, monkeypatch) -> None:
    """A workstation with systemd that runs receivers from a checkout has no ssdaq units; there,
    unit states mean nothing. (systemd as PID 1 is patched in: the CI host has none, and the
    tests under a real one, in tests/e2e, run where the package is installed.)"""
    monkeypatch.setattr(daemons, "systemd_running", lambda: True)
    monkeypatch.setattr(daemons, "UNIT_PATHS", (str(tmp_path / "etc"), str(tmp_path / "usr")))
    if os.path.exists(f"/lib/systemd/system/{daemons.TARGET}"):
        pytest.skip("this host has ssdaq's units installed in /lib/systemd/system")
    assert not daemons.managed_by_systemd()
    (tmp_path / "usr").mkdir()
    (tmp_path / "usr" / daemons.TARGET).write_text("[Unit]\n")
    assert daemons.managed_by_systemd()
