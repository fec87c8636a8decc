"""Log routing: journald with structured fields under systemd, readable stderr lines otherwise."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

EMIT = textwrap.dedent("""
    import logging, os, sys
    from ssdaq.core import logging as sslogging
    if os.environ.get("FAKE_JOURNAL_STREAM"):
        st = os.fstat(2)
        os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    log = sslogging.setup("unit-test", "info")
    print(type(log.handlers[0]).__name__, flush=True)
    logging.getLogger("ssdaq.x").warning("late: %d records", 3,
                                         extra={"SSDAQ_COUNTER": "late", "SSDAQ_PEER": "127.0.0.107"})
    logging.getLogger("ssdaq.x").debug("not shown at info")
    logging.getLogger("ssdaq.x").warning("modules 3-4 absent", extra={"SSDAQ_MODULE": [3, 4]})
""")


def run_emit(**env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    return subprocess.run([sys.executable, "-c", EMIT], env={**full, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=20)


def test_stderr_gets_readable_lines_when_not_under_journald() -> None:
    done = run_emit()
    assert done.stdout.strip() == "StreamHandler"
    assert "WARNING ssdaq-unit-test: late: 3 records" in done.stderr
    assert "not shown" not in done.stderr


def test_journald_is_chosen_when_stderr_is_the_journal_stream() -> None:
    done = run_emit(FAKE_JOURNAL_STREAM="1")
    assert done.stdout.strip() == "JournalFieldHandler"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a private journald needs root (mount namespace); CI runs as root")
def test_records_reach_journald_with_structured_fields(tmp_path) -> None:
    """A real systemd-journald, started in a private mount namespace, receives the fields."""
    script = tmp_path / "journal.sh"
    script.write_text(textwrap.dedent(f"""
        set -e
        mount -t tmpfs tmpfs /run/systemd; mkdir -p /run/systemd/journal
        mount -t tmpfs tmpfs /run/log; mount -t tmpfs tmpfs /var/log/journal
        /lib/systemd/systemd-journald & JPID=$!
        for i in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.02; done
        FAKE_JOURNAL_STREAM=1 PYTHONPATH={ROOT} {sys.executable} -c '{EMIT.replace("'", '"')}' >/dev/null
        journalctl --sync 2>/dev/null || sleep 0.5
        journalctl --no-pager -o json SYSLOG_IDENTIFIER=ssdaq-unit-test
        echo "module 4: $(journalctl --no-pager -o cat SSDAQ_MODULE=4)"
        kill $JPID; wait $JPID || true
    """))
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", str(script)],
                          capture_output=True, text=True, timeout=60)
    entries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert entries, done.stderr
    e = entries[0]
    assert e["MESSAGE"] == "late: 3 records" and e["PRIORITY"] == "4"
    assert e["SSDAQ_RECEIVER"] == "unit-test" and e["SSDAQ_COUNTER"] == "late"
    assert e["SSDAQ_PEER"] == "127.0.0.107" and e["LOGGER"] == "ssdaq.x"
    # a list value: one field with a value per item, so each module's records can be selected
    assert [x["MESSAGE"] for x in entries] == ["late: 3 records", "modules 3-4 absent"]
    assert entries[1]["SSDAQ_MODULE"] == ["3", "4"]
    assert "module 4: modules 3-4 absent" in done.stdout
