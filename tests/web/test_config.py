"""web.toml is rejected with file and key (tests/core/test_config.py checks the shipped file)."""

import subprocess
import sys
from pathlib import Path

from ssdaq.core.errors import EX_CONFIG
from tests.conftest import child_env


def test_bad_config_exits_78_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "web.toml"
    bad.write_text("[poll]\ntimeout_s = 5.0\n")
    done = subprocess.run([sys.executable, "-m", "ssdaq.web.server", "--config", str(bad)],
                          capture_output=True, text=True, env=child_env(), timeout=30)
    assert done.returncode == EX_CONFIG
    assert f"{bad}: poll.timeout_s: expected number in [0.05, 1.0], got 5.0" in done.stderr
