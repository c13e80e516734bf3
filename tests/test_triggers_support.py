"""The support pages for triggers: a customer's recent ones, dead letters, the re-queue POST."""

from __future__ import annotations

import base64
import re
import time

import pytest
from werkzeug.security import generate_password_hash

from wallet_proxy import create_app
from wallet_proxy.triggers.model import DEAD, QUEUED, SENT
from wallet_proxy.triggers.outbox import Dedupe
from wallet_proxy.triggers.setup import triggers_of

from .triggers_helpers import BRAZE_KEY, trigger

STAFF, PASSWORD = "agent", "correct horse battery"
PW_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{STAFF}:{PASSWORD}".encode()).decode()}


@pytest.fixture
def staff_app(env, sandbox, tmp_path, clock):
    return create_app(
        {
            **env,
            "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{PW_HASH}",
            "WALLET_PROXY_SECRET_KEY": "support-test-secret-key-0123456789",
            "BRAZE_REST_URL": sandbox.url,
            "BRAZE_REST_API_KEY": BRAZE_KEY,
            "WALLET_PROXY_TRIGGER_KEYS": "sessionm-trigger-key",
            "WALLET_PROXY_DATA_DIR": str(tmp_path),
            "TESTING": True,
            "CLOCK": clock,
        }
    )


def stored(app, *recipients_and_fates):
    """Triggers taken through the outbox by hand to the given states."""
    outbox = triggers_of(app).outbox
    ids = []
    for recipient, fate in recipients_and_fates:
        made = trigger(recipient, offer_id=str(len(ids)))
        trigger_id = outbox.add(made, Dedupe.of(made, None), now=time.time(), max_waiting=99)
        ids.append(trigger_id.trigger_id)
        if fate != QUEUED:
            outbox.claim(owner="t", now=time.time() + 1, window=0, lease=60, limit=99)
            outbox.move(
                "sending", ids[-1:], now=time.time(), owner="t", lease_until=time.time() + 9
            )
            reason = "Braze answered HTTP 404: campaign not found" if fate == DEAD else None
            outbox.move(
                fate, ids[-1:], now=time.time(), owner="t", reason=reason, dispatch_id="d-1"
            )
            outbox.move("release", ids, now=time.time(), owner="t")
    return ids


def test_a_customers_triggers_and_the_dead_letters(staff_app):
    sent, dead, other = stored(staff_app, ("ana", SENT), ("ana", DEAD), ("bob", DEAD))
    client = staff_app.test_client()
    page = client.get("/support/triggers?customer=ana", headers=BASIC)
    assert page.status_code == 200
    assert sent in page.text and dead in page.text and other not in page.text
    assert "dispatch_id <code>d-1</code>" in page.text
    assert "campaign not found" in page.text
    letters = client.get("/support/triggers", headers=BASIC).text
    assert dead in letters and other in letters and sent not in letters


def test_requeue_is_a_post_with_the_csrf_token(staff_app):
    (dead,) = stored(staff_app, ("ana", DEAD))
    client = staff_app.test_client()
    forged = client.post(f"/support/triggers/{dead}/requeue", headers=BASIC, data={})
    assert forged.status_code == 400
    outbox = triggers_of(staff_app).outbox
    assert outbox.get(dead).state == DEAD
    page = client.get("/support/triggers?customer=ana", headers=BASIC).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "customer": "ana"}
    done = client.post(f"/support/triggers/{dead}/requeue", headers=BASIC, data=form)
    assert (done.status_code, done.location) == (303, "/support/triggers?customer=ana")
    assert outbox.get(dead).state == QUEUED
    assert "queued for Braze again" in client.get(done.location, headers=BASIC).text
    again = client.post(f"/support/triggers/{dead}/requeue", headers=BASIC, data=form)
    assert "not a dead letter" in client.get(again.location, headers=BASIC).text


def test_pages_escape_what_sessionm_sent(staff_app):
    stored(staff_app, ("<script>x</script>", DEAD))
    page = staff_app.test_client().get("/support/triggers", headers=BASIC).text
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page


def test_without_braze_the_page_says_so(env):
    app = create_app(
        {
            **env,
            "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{PW_HASH}",
            "WALLET_PROXY_SECRET_KEY": "support-test-secret-key-0123456789",
            "TESTING": True,
        }
    )
    page = app.test_client().get("/support/triggers", headers=BASIC)
    assert page.status_code == 503 and "not configured" in page.text
