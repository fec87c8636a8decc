"""ssdaq-receiver's command line: config errors exit 78 naming file and key; reserved names."""

import subprocess
from pathlib import Path

from ssdaq.core import config
from ssdaq.core.main import import_class, registered
from ssdaq.receivers.relay import RelayConfig
from tests.conftest import child_env, receiver_argv


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(receiver_argv(*args), env=child_env(), capture_output=True, text=True, timeout=30)


def test_unknown_key_exits_78_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text("[sockets.data]\nprot = 17000\n")
    done = run("relay", "--config", str(cfg))
    assert done.returncode == 78
    assert f"{cfg}: sockets.data.prot: unknown setting" in done.stderr
    assert done.stderr.count("\n") == 1, "a startup failure is one line"


def test_out_of_range_value_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text("[[publishers]]\nport = 70000\n")
    done = run("relay", "--config", str(cfg), "--check-config")
    assert done.returncode == 78
    assert "publishers[0].port: expected integer in [1, 65535], got 70000" in done.stderr


def test_missing_explicit_config_exits_78(tmp_path: Path) -> None:
    done = run("relay", "--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 78 and "absent.toml: no such file" in done.stderr


def test_check_and_print_config(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text("max_datagram_bytes = 1500\n")
    done = run("relay", "--config", str(cfg), "--check-config")
    assert done.returncode == 0 and done.stdout == f"{cfg}: ok\n"
    printed = run("relay", "--config", str(cfg), "--print-config").stdout
    out = tmp_path / "printed.toml"
    out.write_text(printed)
    assert config.load(RelayConfig, out) == RelayConfig(max_datagram_bytes=1500)


def test_reserved_and_unknown_names(tmp_path: Path) -> None:
    assert run("status").returncode == 64
    done = run("nosuch", "--config", str(tmp_path / "nosuch.toml"))
    assert done.returncode == 78 and "'nosuch' is not a registered receiver" in done.stderr


def test_a_config_file_names_a_sites_own_receiver_class(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('receiver_class = "tests.core.sample_receivers:Worker"\n[sockets.data]\nport = 1\n'
                   "[log]\nlevel = 'debug'\n")
    done = run("site", "--config", str(cfg), "--check-config")
    assert done.returncode == 0, done.stderr
    cfg.write_text('receiver_class = "json:dumps"\n')
    done = run("site", "--config", str(cfg))
    assert done.returncode == 78 and "receiver_class: 'json:dumps' is not a ReceiverServer subclass" in done.stderr


def test_a_config_file_may_name_a_class_that_has_settings_of_its_own(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('receiver_class = "ssdaq.receivers.relay:UDPRelay"\nmax_datagram_bytes = 1500\n')
    done = run("site", "--config", str(cfg), "--check-config")
    assert done.returncode == 0, done.stderr


def test_each_registered_receiver_has_one_name() -> None:
    for name, spec in registered().items():
        assert import_class(spec).service_name == name, f"{spec} says another name than {name!r}"
