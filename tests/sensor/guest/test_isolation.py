"""The guest sensor imports only the standard library, psutil and vigil.protocol."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vigil.sensor.guest

GUEST = Path(vigil.sensor.guest.__file__).parent
SRC = GUEST.parents[2]
ALLOWED_VIGIL = ("vigil", "vigil.protocol")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_guest_modules_import_only_what_a_stock_python_has():
    offenders = []
    for path in sorted(GUEST.rglob("*.py")):
        for module, level in _imports(path):
            if level:  # relative: inside the guest package
                continue
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "psutil":
                continue
            if module in ALLOWED_VIGIL:
                continue
            offenders.append(f"{path.relative_to(GUEST)}: {module}")
    assert offenders == []


CHECK = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        forbidden = ('pydantic', 'vigil.server', 'vigil.protocol.models')
        if name == 'pydantic' or name.startswith(forbidden):
            raise ImportError('the guest sensor must not import ' + name)

sys.meta_path.insert(0, Refuse())
import vigil.sensor.guest.main, vigil.sensor.guest.agent, vigil.sensor.guest.collectors
from vigil.sensor.guest.collectors import CollectorContext, create_collectors
from vigil.sensor.guest.state import StateDir
import tempfile
state = StateDir(tempfile.mkdtemp())
state.ensure()
for collector in create_collectors(CollectorContext(state=state)):
    collector.collect()
    collector.close()
ignored = {'psutil', 'vigil', '__main__', 'sitecustomize', 'usercustomize', '_distutils_hack'}
third = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - ignored)
print(' '.join(third))
"""


def test_the_sensor_runs_without_pydantic_or_the_server():
    env = dict(os.environ, PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""  # no third-party module but psutil was loaded


def test_the_sensor_runs_on_the_distributions_python():
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3")
    has_psutil = subprocess.run([python, "-c", "import psutil"], capture_output=True).returncode
    if has_psutil != 0:
        pytest.skip("the distribution's python3-psutil is not installed")
    # -I: the distribution's interpreter alone, with only our source added to its path
    code = f"import sys; sys.path.insert(0, {str(SRC)!r}); exec({CHECK!r})"
    result = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
