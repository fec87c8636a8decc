"""ssdaq-sim log: records over TCP, delimited (one varint length each) or legacy (bare)."""

import socket
import subprocess

import pytest

from ssdaq.data.messages import DelimitedDecoder, LogData, parse
from ssdaq.simulators.log import LogSimConfig, encode, record
from tests.conftest import child_env
from tests.simulators import sim_argv


def run_sim(*args: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run the simulator against a listener; return its result and every byte it sent."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        sim = subprocess.Popen(
            sim_argv("log", "--port", str(server.getsockname()[1]), *args),
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, _ = server.accept()
        with conn:
            data = b"".join(iter(lambda: conn.recv(65536), b""))
        out, err = sim.communicate(timeout=10)
    return subprocess.CompletedProcess(sim.args, sim.returncode, out, err), data


def test_delimited_records_cycle_through_the_severities() -> None:
    done, data = run_sim("--count", "12", "--rate", "1000", "--sender", "sim")
    assert done.returncode == 0 and "log: sent 12 records (delimited" in done.stdout
    records = [parse(LogData, r) for r in DelimitedDecoder().feed(data)]
    assert [r.message for r in records] == [f"simulated record {k} of 12" for k in range(12)]
    assert [r.severity for r in records[:6]] == [10, 20, 30, 40, 50, 10]
    assert {r.sender for r in records} == {"sim"} and [r.line for r in records] == list(
        range(1, 13)
    )


def test_legacy_records_are_bare_protobufs_back_to_back() -> None:
    done, data = run_sim("--count", "3", "--framing", "legacy")
    assert f"(legacy, {len(data)} B)" in done.stdout
    # bare records back to back parse as one: the last, merged over the others (why framing exists)
    assert parse(LogData, data).message == "simulated record 2 of 3"


@pytest.mark.parametrize("framing", ["delimited", "legacy"])
def test_encode_gives_the_bytes_of_record_k(framing: str) -> None:
    cfg = LogSimConfig(count=4, framing=framing, t0_ns=10**18)
    wire = record(cfg, 2).SerializeToString()
    assert encode(cfg, 2) == (bytes([len(wire)]) + wire if framing == "delimited" else wire)
    assert record(cfg, 2).time == 10**18 + 2_000_000


def test_a_rate_of_zero_is_a_usage_error() -> None:
    done = subprocess.run(
        sim_argv("log", "--rate", "0"),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 64 and "--rate must be a number > 0" in done.stderr
