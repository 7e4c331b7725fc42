"""The lab's tooling without booting anything: where images come from, how a guest reaches the
server, what the ground truth looks like, and clear errors for wrong use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.conftest import LiveServer
from tests.harness.procs import VIGIL

from vigil.lab import attack, fleet
from vigil.lab.image import LAB_PASSWORD, LabError, Mirror, Recipe, configured_mirror, wordlist


def test_the_mirror_is_read_from_apt_sources_of_both_formats(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d/debian.sources").write_text(
        "Types: deb\n# a comment: with a colon\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert configured_mirror("bookworm", apt) == Mirror("http://mirror.example/debian", "bookworm")
    with pytest.raises(LabError, match="no apt source for Debian 'trixie'"):
        configured_mirror("trixie", apt)

    (apt / "sources.list.d/debian.sources").write_text("Types: deb\nEnabled: no\n"
                                                       "URIs: http://off.example/\nSuites: trixie\n")
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian trixie main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.example/debian trixie main\n")
    assert configured_mirror("trixie", apt).uri == "http://one-line.example/debian"


def test_image_keys_follow_their_inputs() -> None:
    one = Recipe(Mirror("http://a.example/debian", "bookworm"))
    assert one.base_key() == Recipe(Mirror("http://a.example/debian", "bookworm")).base_key()
    assert one.base_key() != Recipe(Mirror("http://b.example/debian", "bookworm")).base_key()
    assert one.base_key() != Recipe(one.mirror, packages=(*one.packages, "vim")).base_key()
    assert one.image_key() != Recipe(one.mirror, packages=(*one.packages, "vim")).image_key()


def test_the_weak_password_is_in_the_attackers_wordlist_but_not_first() -> None:
    words = wordlist()
    assert LAB_PASSWORD in words
    assert words.index(LAB_PASSWORD) >= 5  # enough failures first for the guessing rule


def test_a_guest_reaches_a_loopback_server_through_user_mode_networking() -> None:
    assert fleet.guest_server_url("http://127.0.0.1:8740") == "http://10.0.2.2:8740"
    assert fleet.guest_server_url("http://localhost:8740/") == "http://10.0.2.2:8740"
    assert fleet.guest_server_url("https://vigil.example:8443") == "https://vigil.example:8443"


def test_the_ground_truth_is_timed_and_readable() -> None:
    seen: list[dict] = []
    record = attack.Recorder(seen.append)
    entry = record("privesc", "exploit", t=1795832278.6061, command="find . -exec ...")
    assert seen == [entry] and entry["t"] == 1795832278.606
    assert entry["time"] == "2026-11-28T02:17:58.606+00:00"
    assert json.loads(json.dumps(entry)) == entry
    line = attack.describe({**entry, "vm": "lab-vm1"})
    assert "02:17:58.606" in line and "privesc" in line and "command=find . -exec ..." in line


def test_every_step_names_the_rules_it_must_trip() -> None:
    from vigil.server.detect.base import all_rules

    assert set(attack.EXPECTED_RULES) == set(attack.STEPS)
    named = {r for rules in (*attack.EXPECTED_RULES.values(), *attack.ALSO_RAISED.values())
             for r in rules}
    known = {rule.id for rule in all_rules()}
    assert named <= known, named - known


def _vigil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIGIL, *args], capture_output=True, text=True, timeout=60, env=env)


def test_lab_commands_say_what_is_wrong(tmp_path: Path, live_server: LiveServer) -> None:
    run = str(tmp_path / "run")
    out = _vigil("lab", "attack", "full", "--vm", "lab-vm1", "--run-dir", run)
    assert out.returncode == 2 and "the lab is not up" in out.stderr, out.stderr
    out = _vigil("lab", "status", "--run-dir", run)
    assert out.returncode == 0 and "the lab is not up" in out.stdout
    out = _vigil("lab", "down", "--run-dir", run)
    assert out.returncode == 0 and "not up" in out.stderr
    out = _vigil("lab", "up", "--server", "file:///etc/passwd", "--api-token", "x",
                 "--run-dir", run)
    assert out.returncode == 2 and "http:// or https://" in out.stderr, out.stderr
    out = _vigil("lab", "up", "--server", live_server.url, "--api-token", "vgu_wrong",
                 "--run-dir", run)
    assert out.returncode == 2 and "401" in out.stderr and "Traceback" not in out.stderr
    out = _vigil("lab", "up", "--server", live_server.url, "--run-dir", run,
                 env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 2 and "--api-token" in out.stderr
    out = _vigil("lab", "attack", "worm", "--vm", "lab-vm1")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_the_guest_payload_runs_alone(tmp_path: Path) -> None:
    """What the image installs in /opt/vigil builds the CLI and starts the sensor's --help with
    nothing but the standard library and psutil (a new top-level command importing more at
    parse time would break every lab guest)."""
    import sys

    from vigil.lab.image import install_guest_payload

    opt = tmp_path / "opt"
    install_guest_payload(opt)
    psutil_dir = Path(__import__("psutil").__file__).parent.parent
    probe = (f"import sys; sys.path[:0] = [{str(opt)!r}, {str(psutil_dir)!r}]; "
             "sys.argv = ['vigil', 'sensor', 'guest', '--help']; from vigil.cli import main; "
             "main()")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: vigil sensor guest" in out.stdout
