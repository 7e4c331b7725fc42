"""An unprivileged sensor says once what it cannot read, and carries on."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

import vigil.sensor.guest

SRC = Path(vigil.sensor.guest.__file__).parents[3]

SCRIPT = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from vigil.sensor.guest.collectors import CollectorContext, create_collectors
from vigil.sensor.guest.state import StateDir
state = StateDir(tempfile.mkdtemp())
state.ensure()
collectors = create_collectors(CollectorContext(state=state, use_journal=False))
errors = []
for _ in range(2):  # a second round must not repeat what the first one said
    for collector in collectors:
        collector.collect()
        errors.extend(e["data"] for e in collector.take_events())
        collector.commit()
print(json.dumps(errors))
"""


def test_collectors_as_nobody_report_what_they_cannot_read_once():
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    python = shutil.which("python3", path="/usr/bin")
    if python is None or subprocess.run([python, "-c", "import psutil"]).returncode != 0:
        pytest.skip("the distribution's python3 with python3-psutil is needed (readable by nobody)")
    nobody = pwd.getpwnam("nobody")

    def demote() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    result = subprocess.run(
        [python, "-I", "-c", SCRIPT, str(SRC)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=demote,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp"},
    )
    assert result.returncode == 0, result.stderr
    import json

    errors = json.loads(result.stdout)
    reported = [(e["collector"], e["what"]) for e in errors]
    assert len(reported) == len(set(reported)), "something was said twice"
    assert ("processes", "exe, cwd or fds of some processes") in reported
    assert all(e["error"] for e in errors)
