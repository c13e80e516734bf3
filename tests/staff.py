"""What the support-page tests share: a staff account, logging in, reading pages."""

from __future__ import annotations

import base64
import html
import re

from werkzeug.security import generate_password_hash

STAFF, PASSWORD = "agent", "correct horse battery"
# Cheap on purpose: these tests hash on every Basic request. The browser test uses the default.
PW_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
SECRET = "support-test-secret-key-0123456789"
STAFF_SETTINGS = ("WALLET_PROXY_STAFF_USERS", "WALLET_PROXY_SECRET_KEY")


def staff_env(env: dict, data_dir, pw_hash: str = PW_HASH) -> dict:
    """`env` with the staff account, and a data folder of the test's own."""
    return {
        **env,
        "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{pw_hash}",
        "WALLET_PROXY_SECRET_KEY": SECRET,
        "WALLET_PROXY_DATA_DIR": str(data_dir),
    }


def basic(name: str, password: str) -> dict:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def token_in(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def log_in(client, name=STAFF, password=PASSWORD, next_=None, **kwargs):
    token = token_in(client.get("/support/login", **kwargs).text)
    form = {"csrf_token": token, "name": name, "password": password}
    if next_ is not None:
        form["next"] = next_
    return client.post("/support/login", data=form, **kwargs)


def assert_page(response, status: int) -> None:
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert "Traceback" not in response.text
    assert f">{status}<" in response.text


def element(page: str, pattern: str) -> str:
    """The unescaped text of the first match of `pattern`'s group 1 in the page."""
    found = re.search(pattern, page, re.S)
    assert found is not None, pattern
    return html.unescape(found.group(1))
