"""How long loading the bundled model takes, cold (a fresh process) and warm (again in the same process).

A shared or busy CPU makes single timings unreliable, so each figure is the median of several runs; the
test suite only checks that loading works offline and leaves timing to this script.

    python benchmarks/load_time.py            # 5 fresh processes, 5 warm loads
    python benchmarks/load_time.py --runs 10 --json load_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: the import of madis_stereo (and torch) is part of a cold load.
COLD = """
import time
start = time.perf_counter()
import madis_stereo as ms
imported = time.perf_counter()
ms.load_default_model()
print(imported - start, time.perf_counter() - imported)
"""


def cold_load(threads: int) -> tuple[float, float]:
    """(import seconds, load seconds) in a new process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", COLD], env=env, capture_output=True, text=True, check=True)
    imported, loaded = (float(v) for v in out.stdout.split())
    return imported, loaded


def warm_load() -> float:
    import madis_stereo as ms

    start = time.perf_counter()
    ms.load_default_model()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the cold processes")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    cold = [cold_load(args.threads) for _ in range(args.runs)]
    warm_load()  # the first load in this process pays the imports
    warm = [warm_load() for _ in range(args.runs)]
    result = {
        "runs": args.runs,
        "cold_import_s": statistics.median(c[0] for c in cold),
        "cold_load_s": statistics.median(c[1] for c in cold),
        "warm_load_s": statistics.median(warm),
        "cpu": os.cpu_count(),
    }
    print(f"bundled model, median of {args.runs}: import {result['cold_import_s']:.2f} s + load "
          f"{result['cold_load_s']:.2f} s in a fresh process; {result['warm_load_s']:.3f} s warm")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
