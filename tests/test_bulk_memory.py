"""The bulk commands' memory does not grow with the file (issue 19 item 3).

`tags import --dry-run` of 2,000,000 rows took 1.04 GB: the CSV reader kept every row,
and the journal was read whole. Here a file of 2,000,000 rows, with a journal of as many
lines (a previous run that did them all), goes through `tags import --dry-run`, a real
`tags import` (which then finds everything done and sends nothing), `warm --dry-run` and
`attributes sync --dry-run`, each in a process of its own that reports its peak resident
memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET

pytestmark = pytest.mark.slow

ROWS = 2_000_000
MB = 1024 * 1024
LIMIT = 150 * MB
# The command, run in this process's interpreter, then its peak resident memory on the
# last line of standard error: VmHWM, kilobytes. (Not getrusage's maxrss, which counts the
# memory of the process forked from, this test's, before it ran Python anew.)
MEASURED = """
import re, sys
from pathlib import Path
from wallet_proxy.cli import main
try:
    main(sys.argv[1:])
finally:
    status = Path("/proc/self/status").read_text()
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024, file=sys.stderr)
"""


@pytest.fixture(scope="module")
def two_million(tmp_path_factory) -> Path:
    """2,000,000 customers, and the journal of a run that tagged each of them."""
    path = tmp_path_factory.mktemp("bulk") / "segment.csv"
    with path.open("w") as csv, Path(f"{path}.journal").open("w") as journal:
        csv.write("user_id,email\n")
        for n in range(ROWS):
            user_id = f"user-{n:07d}"
            csv.write(f"{user_id},u{n}@example.com\n")
            event = {"event": "accepted", "id_type": "user", "id": user_id}
            event.update(tags=["braze_test"], ttl=None, line=n + 2, at="2026-12-06T12:00:00Z")
            journal.write(json.dumps(event) + "\n")
    return path


def peak_memory(args: list[str], env: dict | None = None) -> tuple[int, str]:
    """(peak resident bytes, the command's standard error) of `wallet-proxy ARGS`."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    *output, peak = result.stderr.splitlines()
    assert result.returncode == 0, result.stderr[-3000:]
    return int(peak), result.stdout + "\n".join(output)


def test_a_dry_run_of_two_million_rows_stays_under_150_mb(two_million):
    peak, output = peak_memory(
        ["tags", "import", str(two_million), "--tag", "braze_test", "--dry-run"]
    )
    assert f"is valid: {ROWS} rows" in output
    assert f"Already done (journal): {ROWS}; outcome unknown: 0." in output
    assert peak < LIMIT, peak / MB


def test_a_real_run_of_two_million_rows_stays_under_150_mb(two_million, sandbox):
    core = {
        "PATH": "/usr/bin:/bin",
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
    }
    peak, output = peak_memory(["tags", "import", str(two_million), "--tag", "braze_test"], core)
    assert f"skipping {ROWS} rows already done" in output
    assert "done 0, skipped 2000000, failed 0, unknown 0" in output
    assert sandbox.stats()["core_calls"] == []
    assert peak < LIMIT, peak / MB


def test_a_warm_dry_run_of_two_million_rows_stays_under_150_mb(two_million):
    peak, output = peak_memory(["warm", str(two_million), "--dry-run"])
    assert f"is valid: {ROWS} user ids" in output
    assert peak < LIMIT, peak / MB


def test_an_attributes_sync_dry_run_of_two_million_rows_stays_under_150_mb(two_million):
    args = ["attributes", "sync", str(two_million), "--id-column", "user_id", "--dry-run"]
    peak, output = peak_memory(args)
    assert f"is valid: {ROWS} rows" in output
    assert peak < LIMIT, peak / MB
