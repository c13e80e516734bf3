"""Run every benchmark in turn and print their tables (what `make bench` does).

Each script starts its own servers on free loopback ports and stops them; the
results go to standard output, to be copied into docs/benchmarks.md.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "hits.py",
    "redis_hits.py",
    "misses.py",
    "burst.py",
    "hang.py",
    "triggers.py",
    "logins.py",
]

if __name__ == "__main__":
    failed = 0
    for script in SCRIPTS:
        print(f"\n$ python bench/{script}", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / script)], check=False).returncode != 0
    sys.exit(1 if failed else 0)
