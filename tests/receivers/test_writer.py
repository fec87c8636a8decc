"""ssdaq-writer as a process against a live publisher on loopback: what is sent is what is read."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ssdaq.core.commands import request
from ssdaq.data import messages, trigger
from ssdaq.io import hdf5, provenance, reader, recovery
from ssdaq.io.files import DAMAGED, PART
from ssdaq.io.layouts import LAYOUTS, TIMESTAMP_PATH, TRIGGER_PATH
from tests.conftest import child_env
from tests.daemons import writer_argv
from tests.livepub import readout


def send_readouts(pub, numbers, pause_s: float = 0.0) -> list:
    sent = []
    for i in numbers:
        sent.append(readout(i))
        pub.send(sent[-1].pack())
        if pause_s:
            time.sleep(pause_s)
    return sent


def stored(directory: Path) -> np.ndarray:
    """Every readout row of every complete file, oldest file first."""
    tables = [reader.read_table(p) for p in reader.data_files(directory)]
    return np.concatenate(tables) if tables else np.empty(0)


def assert_rows_equal(rows: np.ndarray, sent: list) -> None:
    assert rows["iro"].tolist() == [r.iro for r in sent]
    assert rows["time"].tolist() == [r.time for r in sent]
    assert rows["cpu_t_s"].tolist() == [r.cpu_t_s for r in sent]
    assert rows["cpu_t_ns"].tolist() == [r.cpu_t_ns for r in sent]
    assert rows["cpu_t"].tolist() == [r.cpu_t for r in sent]
    expected = np.stack([r.data for r in sent]).astype(np.float32)
    np.testing.assert_array_equal(rows["data"], expected)  # NaN rows compare equal here


def test_readouts_are_stored_exactly_and_every_reader_gets_them_back(
        publisher, start_writer) -> None:
    pub, tel = publisher(), publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": tel.endpoint},
                     flush_interval_s=0.2)
    pub.wait_subscriber()
    tel.wait_subscriber()
    sent = send_readouts(pub, range(1, 41))
    tel.send(messages.tel_data(83.6, 22.0, ns=1_700_000_000_250_000_000).SerializeToString())
    w.wait(lambda s: s["counters"]["written"] == 40)
    w.stop()
    files = reader.data_files(w.directory)
    assert len(files) == 1 and not list(w.directory.glob(f"*{PART}"))
    assert_rows_equal(reader.read_table(files[0]), sent)
    tel_rows = reader.read_table(files[0], "/SlowSignal/tel_table")
    assert tel_rows.tolist() == [(1_700_000_000.25, 250_000_000, 1_700_000_000,
                                  np.float32(22.0), np.float32(83.6))]
    with reader.SSDataReader(files[0], mapping="raw") as r:
        assert len(r) == 40
        last = r[-1]  # the original reader failed on negative indices
        np.testing.assert_array_equal(last, sent[-1].data.astype(np.float32))
        assert r.ssreadout.iro == 40 and r.ssreadout.time == sent[-1].time
        ss = r.load_all_data(7)
        np.testing.assert_array_equal(ss.amps, np.stack([s.data[7] for s in sent]).astype(np.float32))
    back = list(reader.readouts(files))
    assert [b.iro for b in back] == list(range(1, 41))
    assert back[3].cpu_t_ns == sent[3].cpu_t_ns and back[3].modules_present.tolist() == \
        sent[3].modules_present.tolist()
    attrs = reader.attributes(files[0])
    assert attrs["ss_data_version"] == 0 and attrs["CLASS"] == "TABLE"


def test_stop_writes_everything_received_however_long_the_flush_interval(
        publisher, start_writer, notified) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=60.0)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 26))
    status = w.wait(lambda s: s["counters"]["received"] == 25)
    assert status["counters"]["written"] == 0 and status["pending_rows"] == 25
    w.proc.send_signal(signal.SIGTERM)
    notified.wait_for("STOPPING", "1", w.proc.pid)
    w.stop()
    assert_rows_equal(stored(w.directory), sent)


def test_files_rotate_by_size_and_never_overwrite(publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.05,
                     max_file_bytes=60_000, compression_level=0)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 61), pause_s=0.02)
    # flushed after every write; a file being closed gets its provenance and checksum first
    status = w.wait(lambda s: s["counters"]["written"] == 60 and s["counters"]["written_bytes"]
                    == sum(p.stat().st_size for p in w.directory.iterdir()))
    assert status["file"] is None or (0 < status["file_bytes"] < 60_000 + 8232 * 60
                                      and status["file_age_s"] < 10)
    w.stop()
    files = reader.data_files(w.directory)
    assert len(files) >= 3 and len({f.name for f in files}) == len(files)
    assert_rows_equal(stored(w.directory), sent)
    assert all(f.stat().st_size < 60_000 + 8232 * 60 for f in files)


def test_files_rotate_by_age(publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.1,
                     max_file_age_s=1.0)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 36), pause_s=0.1)
    w.wait(lambda s: s["counters"]["written"] == 35)
    w.stop()
    assert len(reader.data_files(w.directory)) >= 3
    assert_rows_equal(stored(w.directory), sent)


def test_rotate_command_closes_the_file_now(publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=60.0)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 4))
    w.wait(lambda s: s["counters"]["received"] == 3)
    reply = request(str(w.runtime / "writer-readout.ctl"), "rotate")
    assert reply["ok"] and reply["result"].endswith(".hdf5")
    assert_rows_equal(reader.read_table(w.directory / reply["result"]), sent)
    w.stop()


def test_reload_moves_to_a_new_directory_and_endpoint_without_losing_rows(
        publisher, start_writer, tmp_path: Path) -> None:
    first, second = publisher(), publisher()
    w = start_writer("readout", {"readout": first.endpoint, "teldata": ""}, flush_interval_s=60.0)
    first.wait_subscriber()
    sent = send_readouts(first, range(1, 6))
    w.wait(lambda s: s["counters"]["received"] == 5)
    config = tmp_path / "writer-readout.toml"
    moved = tmp_path / "moved"
    config.write_text(config.read_text().replace(str(w.directory), str(moved))
                      .replace(first.endpoint, second.endpoint))
    w.proc.send_signal(signal.SIGHUP)
    second.wait_subscriber()
    sent_later = send_readouts(second, range(6, 9))
    w.wait(lambda s: s["counters"]["received"] == 8)
    w.stop()
    assert_rows_equal(stored(w.directory), sent)  # what came before the reload: the old place
    assert_rows_equal(stored(moved), sent_later)


def test_gaps_and_malformed_messages_are_counted_and_the_rest_stored(
        publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, flush_interval_s=0.1)
    pub.wait_subscriber()
    sent = send_readouts(pub, [1, 2])
    pub.send(b"\x00" * 100)
    sent += send_readouts(pub, [6, 7])
    status = w.wait(lambda s: s["counters"]["written"] == 4)
    assert status["counters"]["missed"] == 3 and status["counters"]["bad_size"] == 1
    assert status["sequence"] == {"last": 7, "missed": 3, "gaps": 1, "restarts": 0}
    assert "lost 4 (missed 3, bad_size 1)" in status["status_line"]
    assert "missed: 3 since last report" in w.stop()
    assert_rows_equal(stored(w.directory), sent)


def test_a_file_left_by_a_killed_writer_is_verified_and_published_at_the_next_start(
        publisher, start_writer, tmp_path: Path) -> None:
    pub = publisher()
    inputs = {"readout": pub.endpoint, "teldata": ""}
    w = start_writer("readout", inputs, flush_interval_s=0.1)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 11))
    w.wait(lambda s: s["counters"]["written"] == 10)
    w.proc.kill()
    w.proc.wait()
    parts = list(w.directory.glob(f"*{PART}"))
    assert len(parts) == 1 and not reader.data_files(w.directory)
    damaged = w.directory / f"readout_20000101_000000{PART}"
    damaged.write_bytes(parts[0].read_bytes()[:3000])  # a truncated file: not HDF5 any more
    again = start_writer("readout", inputs)
    log = again.stop()
    assert "recovered" in log and "10 rows" in log and "is damaged" in log
    files = reader.data_files(w.directory)
    assert [f.name for f in files] == [parts[0].name[: -len(".part")]]
    assert_rows_equal(stored(w.directory), sent)
    assert (w.directory / f"readout_20000101_000000{DAMAGED}").exists()


def test_a_writer_killed_under_load_keeps_the_rows_of_its_last_flush(
        publisher, start_writer) -> None:
    """kill -9 while readouts stream in at 200/s: the rows up to the last flush come back.

    A kill that strikes during a write (one in ten runs or so) leaves the file's last chunk
    half-rewritten: the salvage then keeps every chunk before it, so the flushed rows of that
    partly-filled chunk go with the write in flight (docs/operations.md states the bound)."""
    pub = publisher()
    inputs = {"readout": pub.endpoint, "teldata": ""}
    w = start_writer("readout", inputs, flush_interval_s=0.2)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 201), pause_s=0.005)  # about 1 s
    flushed = w.status()["counters"]["written"]
    w.proc.kill()
    w.proc.wait()
    again = start_writer("readout", inputs)
    log = again.stop()
    rows = stored(w.directory)
    chunk = hdf5.CHUNK_BYTES // rows.dtype.itemsize
    print(f"writer kill -9 at 200 readouts/s: {len(sent)} sent, {flushed} written before the kill "
          f"(status), {len(rows)} kept, {len(sent) - len(rows)} lost")
    if "damaged" in log:  # killed inside a write
        assert f"{len(rows)} rows saved in" in log
        assert flushed - len(rows) < chunk and len(rows) % chunk == 0
    else:
        assert "recovered" in log and f"{len(rows)} rows" in log
        assert flushed <= len(rows)
    assert len(rows) <= len(sent)
    assert len(sent) - len(rows) <= 200 * 0.2 + 20 + chunk  # a flush interval, the queue, a chunk
    assert_rows_equal(rows, sent[: len(rows)])


def test_trigger_packets_are_stored_with_their_bytes(publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("trigger", {"trigger": pub.endpoint}, flush_interval_s=0.1)
    pub.wait_subscriber()
    rng = np.random.default_rng(3)
    patterns = (rng.random((16, trigger.N_SP)) < 0.01).astype(np.uint8)
    sparse = np.zeros((24, trigger.N_SP), np.uint8)
    sparse[3, [5, 300]] = 1
    packets = [
        trigger.NominalTriggerPacketV1(tack_time=11, phase=4, ro_count=1, pps_count=2,
                                       clock_count=3, source=1, trigger_patterns=patterns),
        trigger.BusyTriggerPacketV1(tack_time=12, phase=1, ro_count=2),
        trigger.TriggerPacketV2(tack_time=13, phase=8, ro_count=3, message_type=1,
                                error_flags=2, trigger_patterns=np.tile(patterns, (2, 1))),
        trigger.TriggerPacketV3(tack_time=14, phase=128, ro_count=4, trigger_patterns=sparse),
    ]
    for p in packets:
        pub.send(p.pack())
    pub.send(b"\xfe\xca\x09junk")
    w.wait(lambda s: s["counters"]["written"] == 4 and s["counters"]["unknown_type"] == 1)
    w.stop()
    [path] = reader.data_files(w.directory, "trigger")
    rows = reader.read_table(path, TRIGGER_PATH)
    assert rows["tack_time"].tolist() == [11, 12, 13, 14]
    assert rows["busy"].tolist() == [0, 1, 1, 0] and rows["mtype"].tolist() == [0, 1, 2, 3]
    assert rows["error_flags"].tolist() == [0, 0, 2, 0]
    assert rows["n_triggered"].tolist() == [int(p.trigg_union.sum()) for p in packets]
    np.testing.assert_array_equal(np.unpackbits(rows["union"], axis=1),
                                  np.stack([p.trigg_union for p in packets]).astype(np.uint8))
    np.testing.assert_array_equal(np.unpackbits(rows["trigg"], axis=1),
                                  np.stack([p.trigg for p in packets]))
    assert list(reader.trigger_packets(path)) == packets


def test_trigger_packets_of_one_size_are_stored_one_per_row(publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("trigger", {"trigger": pub.endpoint}, flush_interval_s=0.5)
    pub.wait_subscriber()
    packets = [trigger.NominalTriggerPacketV1(tack_time=100 + i, ro_count=i) for i in range(20)]
    for p in packets:
        pub.send(p.pack())
    w.wait(lambda s: s["counters"]["written"] == 20)
    w.stop()
    [path] = reader.data_files(w.directory, "trigger")
    assert list(reader.trigger_packets(path)) == packets


def test_timestamps_keep_every_field(publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("timestamp", {"timestamp": pub.endpoint}, flush_interval_s=0.1)
    pub.wait_subscriber()
    sent = []
    for i in range(5):
        m = messages.TriggerMessage(telescope=1, event_counter=100 + i, pps_counter=7,
                                    clock_counter=123 * i, type=2 if i == 3 else 1, pattern=2**63 + i)
        m.time.seconds, m.time.pico_seconds, m.time.tdc_lo = 1_700_000_000 + i, 10**12 - i, i
        sent.append(m)
        pub.send(m.SerializeToString())
    w.wait(lambda s: s["counters"]["written"] == 5)
    w.stop()
    [path] = reader.data_files(w.directory, "timestamp")
    rows = reader.read_table(path, TIMESTAMP_PATH)
    assert rows["event_counter"].tolist() == [m.event_counter for m in sent]
    assert rows["type"].tolist() == [1, 1, 1, 2, 1] and rows["status"].tolist() == [5] * 5
    assert rows["pattern"].tolist() == [m.pattern for m in sent]
    assert rows["time_s"].tolist() == [m.time.seconds for m in sent]
    assert rows["time_ps"].tolist() == [m.time.pico_seconds for m in sent]
    assert rows["tdc_lo"].tolist() == list(range(5))
    assert (rows["arrival_ns"] > 0).all()


def test_a_bad_config_exits_78_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text("[output]\ncompression_level = 12\n")
    done = subprocess.run(writer_argv("readout", "--config", str(cfg)), env=child_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 78
    assert f"{cfg}: output.compression_level: expected integer in [0, 9], got 12" in done.stderr


def test_default_configs_are_written_and_load_back(tmp_path: Path) -> None:
    done = subprocess.run(writer_argv("--write-default-configs", str(tmp_path)), env=child_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for stream in ("readout", "trigger", "timestamp"):
        checked = subprocess.run(
            writer_argv(stream, "--config", str(tmp_path / f"writer-{stream}.toml"), "--check-config"),
            env=child_env(), capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
    assert 'endpoint = "tcp://127.0.0.101:9006"' in (tmp_path / "writer-readout.toml").read_text()


def test_an_unwritable_directory_exits_69(tmp_path: Path, runtime_dir: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[monitor]\nenabled = false\n[output]\ndirectory = "{blocker}/data"\n')
    done = subprocess.run(writer_argv("readout", "--config", str(cfg)), env=child_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 69 and f"cannot create the data directory {blocker}/data" in done.stderr


def test_a_failed_write_exits_74_and_the_next_start_leaves_only_complete_files(
        publisher, start_writer) -> None:
    pub = publisher()
    inputs = {"readout": pub.endpoint, "teldata": ""}
    # a file size limit makes a write fail for real (EFBIG; Python ignores SIGXFSZ)
    w = start_writer("readout", inputs, prefix=("prlimit", "--fsize=300000", "--"),
                     flush_interval_s=0.05, compression_level=0)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 101), pause_s=0.01)
    assert w.proc.wait(30) == 74
    err = w.proc.stderr.read()
    w.proc.stderr.close()
    assert "cannot write" in err and "rows held in memory are lost" in err
    again = start_writer("readout", inputs)
    log = again.stop()
    assert "rows saved in" in log
    for path in reader.data_files(w.directory):
        assert recovery.verify(path, LAYOUTS["readout"]) >= 0  # every published file reads whole
    rows = stored(w.directory)
    assert 0 < len(rows) < 100 and not list(w.directory.glob(f"*{PART}"))
    assert_rows_equal(rows, sent[: len(rows)])  # salvaged: what was flushed before the failure
    assert len(list(w.directory.glob(f"*{DAMAGED}"))) == 1


# ---------------------------------------------------------------------------- disk full

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 12 MB tmpfs: a filesystem that really fills up (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave_bytes: int) -> Path:
    """Fill the filesystem until only ``leave_bytes`` are free."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    with open(filler, "wb") as f:
        f.write(b"\xff" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


def test_a_full_disk_stops_writing_holds_data_and_resumes_without_loss(
        publisher, start_writer, small_disk: Path, notified) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, directory=small_disk,
                     flush_interval_s=0.1, compression_level=0, min_free_bytes=2_000_000)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 11))
    w.wait(lambda s: s["counters"]["written"] == 10)
    filler = fill(small_disk, 2_500_000)
    sent += send_readouts(pub, range(11, 201))  # 1.6 MB: more than the reserve allows
    # the file is closed when the disk fills (once the ledger's counters at its end were read)
    status = w.wait(lambda s: s["disk_full"] and s["counters"]["received"] == 200
                    and s["file"] is None)
    assert status["status_line"].startswith("DISK FULL")
    [complete] = reader.data_files(small_disk)
    assert reader.read_table(complete)["iro"][0] == 1, "what was written before is a complete file"
    notified.wait_for("STATUS", "DISK FULL (", w.proc.pid, timeout=5, part=True)
    filler.unlink()
    w.wait(lambda s: not s["disk_full"] and s["counters"]["written"] == 200)
    log = w.stop()
    assert "disk full" in log and "disk space is back" in log
    assert_rows_equal(stored(small_disk), sent)


def test_a_full_disk_drops_the_oldest_held_data_beyond_the_buffer_and_counts_it(
        publisher, start_writer, small_disk: Path) -> None:
    pub = publisher()
    w = start_writer("readout", {"readout": pub.endpoint, "teldata": ""}, directory=small_disk,
                     flush_interval_s=0.1, compression_level=0, min_free_bytes=2_000_000,
                     max_buffer_bytes=1_048_576)
    pub.wait_subscriber()
    filler = fill(small_disk, 1_000_000)
    send_readouts(pub, range(1, 301), pause_s=0.002)  # 2.5 MB held against a 1 MB buffer
    status = w.wait(lambda s: s["counters"]["received"] == 300 and s["disk_full"])
    dropped = status["counters"]["disk_full"]
    assert dropped > 0 and status["pending_bytes"] <= 1_048_576
    filler.unlink()
    w.wait(lambda s: s["counters"]["written"] + s["counters"]["disk_full"] == 300)
    w.stop()
    iro = stored(small_disk)["iro"]
    assert iro.tolist() == list(range(dropped + 1, 301)), "the oldest are dropped, the rest kept"


def test_leftovers_wait_for_disk_space_before_they_are_recovered(
        publisher, start_writer, small_disk: Path) -> None:
    pub = publisher()
    inputs = {"readout": pub.endpoint, "teldata": ""}
    w = start_writer("readout", inputs, directory=small_disk, flush_interval_s=0.1,
                     compression_level=0, min_free_bytes=2_000_000)
    pub.wait_subscriber()
    sent = send_readouts(pub, range(1, 21))
    w.wait(lambda s: s["counters"]["written"] == 20)
    w.proc.kill()
    w.proc.wait()
    filler = fill(small_disk, 1_000_000)
    again = start_writer("readout", inputs, directory=small_disk, flush_interval_s=0.1,
                         compression_level=0, min_free_bytes=2_000_000)
    assert len(list(small_disk.glob(f"*{PART}"))) == 1, "no room yet: the leftover waits"
    filler.unlink()
    again.wait(lambda s: len(s["finished"]) == 1)
    log = again.stop()
    assert "left as they are until the disk has room" in log and "recovered" in log
    assert_rows_equal(stored(small_disk), sent)


def test_gaps_in_the_cdts_event_counter_are_counted_and_listed_in_the_file(
        publisher, start_writer) -> None:
    pub = publisher()
    w = start_writer("timestamp", {"timestamp": pub.endpoint}, flush_interval_s=0.1)
    pub.wait_subscriber()
    for counter in (1, 2, 5, 6):
        pub.send(messages.TriggerMessage(telescope=1, event_counter=counter).SerializeToString())
    status = w.wait(lambda s: s["counters"]["written"] == 4)
    assert status["counters"]["missed"] == 2
    w.stop()
    [path] = reader.data_files(w.directory, "timestamp")
    assert [(g["column"], g["last_before"], g["first_after"], g["missing"])
            for g in provenance.read(path)["gaps"]] == [("event_counter", 2, 5, 2)]
