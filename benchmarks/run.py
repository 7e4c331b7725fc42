"""`make bench`: every benchmark, one after the other; each prints JSON lines of figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = [
    ["bench_ingest.py", "--backend", "both"],
    ["bench_heartbeats.py", "--backend", "both"],
    ["bench_sensor_footprint.py"],
    ["bench_detection.py"],
    ["bench_vmi.py"],
]


def main() -> int:
    failed = 0
    for bench in BENCHES:
        print(f"== {' '.join(bench)}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / bench[0]), *bench[1:]], cwd=HERE) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
