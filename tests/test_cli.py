"""The `vigil` command: --help everywhere, clear errors, the guest sensor's light imports."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tests.harness.procs import VIGIL

from vigil.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


def test_every_command_has_help() -> None:
    commands = _commands(build_parser())
    assert ("sensor", "guest") in commands and ("token", "enroll") in commands
    for cmd in commands:
        out = subprocess.run([VIGIL, *cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (cmd, out.stderr)
        assert "usage: vigil" in out.stdout
        # every option documents itself
        parser = build_parser()
        for name in cmd:
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[name]
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, f"vigil {' '.join(cmd)} {action.option_strings[0]} has no help"


def test_commands_before_init_say_what_to_do(tmp_path: Path) -> None:
    env = {"VIGIL_HOME": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([VIGIL, "token", "enroll", "--tenant", "default"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "vigil init" in out.stderr and "Traceback" not in out.stderr


def test_init_refuses_a_short_password_and_keeps_secrets_private(tmp_path: Path) -> None:
    env = {"VIGIL_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "pw").write_text("short\n")
    out = subprocess.run([VIGIL, "init", "--admin-email", "a@example.org",
                          "--admin-password-file", str(tmp_path / "pw")], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "at least 8 characters" in out.stderr
    (tmp_path / "pw").write_text("long enough password\n")
    for _ in range(2):  # idempotent
        out = subprocess.run([VIGIL, "init", "--admin-email", "a@example.org",
                              "--admin-password-file", str(tmp_path / "pw")], env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    home = tmp_path / "home"
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "secret.key").stat().st_mode & 0o777 == 0o600
    out = subprocess.run([VIGIL, "audit", "verify"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "intact" in out.stdout


def test_server_refuses_a_world_readable_secret(tmp_path: Path) -> None:
    env = {"VIGIL_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "pw").write_text("long enough password\n")
    subprocess.run([VIGIL, "init", "--admin-email", "a@example.org", "--admin-password-file",
                    str(tmp_path / "pw")], env=env, check=True, capture_output=True)
    (tmp_path / "home" / "secret.key").chmod(0o644)
    out = subprocess.run([VIGIL, "server", "--port", "1"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "chmod 600" in out.stderr


def test_guest_sensor_needs_nothing_but_stdlib_and_psutil() -> None:
    """Import the guest sensor with every non-stdlib module except psutil made unimportable."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top in sys.stdlib_module_names or top in ('vigil', 'psutil'):\n"
        "            return None\n"
        "        raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import vigil.sensor.guest.main, vigil.sensor.guest.agent, vigil.cli\n"
        "p = vigil.cli.build_parser()\n"
        "p.parse_args(['sensor', 'guest', '--server', 'http://x', '--enroll-token', 'y'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'fastapi', 'sqlalchemy'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_several_workers_need_postgresql(tmp_path: Path) -> None:
    env = {"VIGIL_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "pw").write_text("long enough password\n")
    subprocess.run([VIGIL, "init", "--admin-email", "a@example.org", "--admin-password-file",
                    str(tmp_path / "pw")], env=env, check=True, capture_output=True)
    out = subprocess.run([VIGIL, "server", "--port", "1", "--workers", "2"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "PostgreSQL" in out.stderr
