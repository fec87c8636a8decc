"""ssdaq.daemons: what a receiver's unit state is called, from systemd's properties."""

import pytest

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
