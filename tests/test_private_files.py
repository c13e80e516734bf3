"""Issue 19 item 4: every file the service and its commands write is for their user only
(mode 0600), whatever the umask, also in a data folder that exists with mode 0755 (as the
image makes it). Checked by stat after real use: gunicorn with its deliverer, and the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import GunicornInstance, wait_until
from tests.staff import PASSWORD, PW_HASH, SECRET, STAFF, token_in
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY, DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from wallet_proxy.stores import SqliteSharedStore
from wallet_proxy.triggers.sqlite_outbox import SqliteOutbox

TRIGGER_KEY = "trigger-key-for-private-files"
TRIGGER = {
    "braze_campaign_id": "camp-1",
    "customer": {"external_id": "ext-ana", "email": "ana@example.com"},
}


def open_folder(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o755)
    return path


def modes(folder: Path) -> dict[str, int]:
    return {entry.name: stat.S_IMODE(entry.lstat().st_mode) for entry in folder.iterdir()}


@pytest.mark.slow
def test_the_service_writes_only_private_files(sandbox, tmp_path):
    data = open_folder(tmp_path / "data")
    settings = {
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_REST_API_KEY": DEMO_BRAZE_API_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": TRIGGER_KEY,
        "WALLET_PROXY_DATA_DIR": str(data),
        "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{PW_HASH}",
        "WALLET_PROXY_SECRET_KEY": SECRET,
    }
    with GunicornInstance(sandbox.url, tmp_path / "gunicorn.log", umask=0, **settings) as server:
        accepted = requests.post(
            f"{server.url}/v1/braze/triggers",
            data=json.dumps(TRIGGER),
            headers={"Authorization": f"Bearer {TRIGGER_KEY}"},
            timeout=10,
        )
        assert accepted.status_code == 202
        wait_until(lambda: sandbox.stats()["braze_messages"], timeout=30)  # the deliverer ran
        session = requests.Session()
        token = token_in(session.get(f"{server.url}/support/login", timeout=10).text)
        form = {"csrf_token": token, "name": STAFF, "password": PASSWORD}
        signed_in = session.post(f"{server.url}/support/login", data=form, timeout=10)
        assert signed_in.history[0].status_code == 303  # a session in the shared store
        running = modes(data)
    written = {"triggers.sqlite3", "triggers.sqlite3-wal", "triggers.sqlite3-shm"}
    assert written | {"support.sqlite3", "deliverer.lock"} <= set(running)
    assert running == dict.fromkeys(running, 0o600)
    stopped = modes(data)
    assert stopped == dict.fromkeys(stopped, 0o600)


@pytest.mark.slow
def test_tags_import_writes_only_private_files(sandbox, env, tmp_path):
    folder = open_folder(tmp_path / "bulk")
    path = folder / "segment.csv"
    path.write_text("external_id\nuser-1\nnobody-2\n")
    path.chmod(0o644)
    child_env = {
        **os.environ,
        **env,
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
    }
    command = [sys.executable, "-m", "wallet_proxy.cli", "tags", "import", str(path)]
    result = subprocess.run(
        [*command, "--tag", "t", "--ttl", "60"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        umask=0,
    )
    assert result.returncode == 1, result.stderr  # nobody-2 failed: FILE.failed.csv
    assert modes(folder) == {
        "segment.csv": 0o644,
        "segment.csv.journal": 0o600,
        "segment.csv.failed.csv": 0o600,
    }


def test_databases_an_older_version_left_readable_are_made_private(tmp_path):
    data = open_folder(tmp_path / "data")
    for name in ("triggers.sqlite3", "triggers.sqlite3-wal", "support.sqlite3"):
        (data / name).touch(mode=0o644)
        (data / name).chmod(0o644)
    SqliteOutbox(data).close()
    SqliteSharedStore(data / "support.sqlite3", unix_time=lambda: 0.0)
    found = modes(data)
    assert found == dict.fromkeys(found, 0o600)
