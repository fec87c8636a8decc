"""The unit files in units/: systemd's own lint, the hardening score, the ports against the defaults.

``systemd-analyze verify`` insists that every ``ExecStart=`` binary exists, and on this machine
the package is not installed: the verify test points the units at stub executables in a temporary
directory, the only way to lint them here. The end-to-end test verifies the installed units
against the real binaries inside its containers (Debian 12 and 13).
"""

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ssdaq.core.config import to_dict
from ssdaq.core.main import import_class, registered
from ssdaq.web.config import WebConfig

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "units"
SERVICES = sorted(UNITS.glob("*.service"))
SOCKETS = sorted(p for p in UNITS.glob("*.socket") if "@" not in p.name)
MAX_EXPOSURE = 2.0
# The keys that confine a service, as opposed to those that say what it runs and how
HARDENING = re.compile(
    r"^(CapabilityBoundingSet|DevicePolicy|LockPersonality|MemoryDenyWriteExecute|"
    r"NoNewPrivileges|Private\w+|Protect\w+|RemoveIPC|Restrict\w+|SystemCall\w+|UMask)="
)

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: systemd)",
)


def unit_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def with_stub_binaries(tmp_path: Path) -> Path:
    """units/ copied to tmp_path, ``/usr/bin/ssdaq*`` in Exec lines pointing at stub executables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text()
        for exe in set(re.findall(r"/usr/bin/(ssdaq[\w-]*)", text)):
            (bin_dir / exe).write_text("#!/bin/sh\n")
            (bin_dir / exe).chmod(0o755)
        (out / unit.name).write_text(text.replace("/usr/bin/ssdaq", f"{bin_dir}/ssdaq"))
    return out


def verify(*units: Path) -> str:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return (proc.stdout + proc.stderr).strip()


def test_systemd_analyze_verify_prints_nothing_for_any_unit(tmp_path: Path) -> None:
    """verify exits 0 even on unknown keys or bad values: any output at all is a failure."""
    units = with_stub_binaries(tmp_path)
    assert verify(*sorted(units.iterdir())) == ""


def test_a_site_drop_in_replaces_the_template_socket_listener(tmp_path: Path) -> None:
    """The drop-in's empty ListenDatagram= drops the shipped listener; its own line adds the port.

    systemd itself says so: with the empty line alone the instance has no listener left.
    """
    units = with_stub_binaries(tmp_path)
    dropin = units / "ssdaq-receiver@.socket.d" / "port.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Socket]\nListenDatagram=\n")
    assert "has no Listen setting" in verify(units / "ssdaq-receiver@site.socket")
    dropin.write_text("[Socket]\nListenDatagram=\nListenDatagram=0.0.0.0:17300\n")
    assert verify(units / "ssdaq-receiver@site.socket", units / "ssdaq-receiver@site.service") == ""


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_service_exposure_is_at_most_2(service: Path) -> None:
    proc = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            f"--threshold={MAX_EXPOSURE * 10:.0f}",
            str(service),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout).group(1))
    assert (proc.returncode, score <= MAX_EXPOSURE) == (0, True), proc.stdout


#: what a service's confinement leaves out on purpose, and why
EXCEPTIONS = {
    # DynamicUser=yes with SupplementaryGroups=ssdaq: PrivateUsers= would map that group to nogroup
    "ssdaq-web.service": {"PrivateUsers=yes"},
}


def test_services_share_one_sorted_hardening_block() -> None:
    """Every service is confined the same way, its hardening keys sorted (the style guide)."""
    blocks = {p.name: [line for line in unit_lines(p) if HARDENING.match(line)] for p in SERVICES}
    first = blocks["ssdaq-readout.service"]
    for name, block in blocks.items():
        expected = [line for line in first if line not in EXCEPTIONS.get(name, set())]
        assert block == expected, f"{name} differs from ssdaq-readout.service"
    keys = [line.split("=", 1)[0] for line in first]
    assert keys == sorted(keys)


@pytest.mark.parametrize("socket_unit", SOCKETS, ids=lambda p: p.name)
def test_socket_port_and_fd_name_match_the_shipped_config(socket_unit: Path) -> None:
    """Under systemd the .socket's port wins; started by hand the default config's: the same."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read(socket_unit)
    listen = unit["Socket"].get("ListenDatagram") or unit["Socket"]["ListenStream"]
    fd_name = unit["Socket"]["FileDescriptorName"]
    name = socket_unit.stem.removeprefix("ssdaq-")
    config_class = WebConfig if name == "web" else import_class(registered()[name]).config_class
    bind = to_dict(config_class())["sockets"][fd_name]
    # a bare port is every address, which the config spells as an empty ip
    assert listen == (f"{bind['ip']}:{bind['port']}" if bind["ip"] else str(bind["port"]))
