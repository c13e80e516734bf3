"""The support pages for triggers: a customer's recent ones, dead letters, the re-queue POST."""

from __future__ import annotations

import re
import time

import pytest

from tests.staff import PASSWORD, STAFF, basic, staff_env
from wallet_proxy.braze_users import (
    BRAZE_ID,
    DEFAULT_PRIORITIZATION,
    EMAIL,
    USER_ALIAS,
    BrazeUser,
)
from wallet_proxy.triggers.model import DEAD, QUEUED, SENT
from wallet_proxy.triggers.outbox import Dedupe
from wallet_proxy.triggers.running import deliverer_for
from wallet_proxy.triggers.setup import triggers_of

from .triggers_helpers import BRAZE_KEY, trigger

BASIC = basic(STAFF, PASSWORD)


@pytest.fixture
def env(env, tmp_path):
    return staff_env(env, tmp_path)


@pytest.fixture
def staff_app(sandbox, make_app):
    return make_app(
        BRAZE_REST_URL=sandbox.url,
        BRAZE_REST_API_KEY=BRAZE_KEY,
        WALLET_PROXY_TRIGGER_KEYS="sessionm-trigger-key",
    )


def stored(app, *recipients_and_fates):
    """Triggers taken through the outbox by hand to the given states; a recipient is an
    external id or any BrazeUser."""
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
    back = "/support/triggers?by=external_id&customer=ana"
    assert (done.status_code, done.location) == (303, back)
    assert outbox.get(dead).state == QUEUED
    assert "queued for Braze again" in client.get(done.location, headers=BASIC).text
    again = client.post(f"/support/triggers/{dead}/requeue", headers=BASIC, data=form)
    assert "not a dead letter" in client.get(again.location, headers=BASIC).text


def test_pages_escape_what_sessionm_sent(staff_app):
    stored(staff_app, ("<script>x</script>", DEAD))
    page = staff_app.test_client().get("/support/triggers", headers=BASIC).text
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page


def test_without_braze_the_page_says_so(app):
    page = app.test_client().get("/support/triggers", headers=BASIC)
    assert page.status_code == 503 and "not configured" in page.text


def test_a_customers_triggers_found_by_any_identifier(staff_app):
    alias = BrazeUser(USER_ALIAS, "123", "loyalty_id")
    email = BrazeUser(EMAIL, "Ana@Example.com", prioritization=DEFAULT_PRIORITIZATION)
    braze_id = BrazeUser(BRAZE_ID, "5f0c6b0e5a11")
    by_alias, by_email, by_braze_id, by_external_id = stored(
        staff_app, (alias, DEAD), (email, QUEUED), (braze_id, SENT), ("123", SENT)
    )
    client = staff_app.test_client()

    def found(**query) -> str:
        page = client.get("/support/triggers", query_string=query, headers=BASIC)
        assert page.status_code == 200
        return page.text

    aliased = found(by="user_alias", customer="123", alias_label="loyalty_id")
    assert by_alias in aliased and by_external_id not in aliased
    assert "Triggers for <code>user_alias loyalty_id: 123</code>" in aliased
    page = found(by="email", customer="ana@example.com")  # an address in any case
    assert by_email in page and "email Ana@Example.com" in page
    page = found(by="braze_id", customer="5f0c6b0e5a11")
    assert by_braze_id in page and by_alias not in page
    page = found(customer="123")  # an external id, as before the other kinds
    assert by_external_id in page and by_alias not in page
    assert by_alias not in found(by="user_alias", customer="123", alias_label="other")
    # The re-queue form brings staff back to the same search.
    token = re.search(r'name="csrf_token" value="([^"]+)"', aliased).group(1)
    search = {"by": "user_alias", "customer": "123", "alias_label": "loyalty_id"}
    done = client.post(
        f"/support/triggers/{by_alias}/requeue",
        headers=BASIC,
        data={"csrf_token": token, **search},
    )
    assert done.location == "/support/triggers?by=user_alias&customer=123&alias_label=loyalty_id"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"by": "phone", "customer": "1"}, "named by one of external_id, braze_id"),
        ({"by": "email", "customer": "not-an-address"}, "The email must be an email address"),
        ({"by": "braze_id", "customer": "a b"}, "The braze_id must be 1 to 128"),
        ({"by": "user_alias", "customer": "123"}, "The alias_label must be 1 to 255"),
    ],
)
def test_a_search_the_rules_refuse_is_a_400_page(staff_app, query, message):
    page = staff_app.test_client().get("/support/triggers", query_string=query, headers=BASIC)
    assert page.status_code == 400 and message in page.text


def test_a_paused_campaigns_triggers_show_as_dead_letters_with_brazes_notice(
    staff_app, sandbox, clock
):
    """Over real HTTP to the sandbox's Braze, whose campaign is paused: the dead letter
    carries Braze's notice, on the page, and the Re-queue button sends it once resumed."""
    from prometheus_client import REGISTRY

    def dead_counted() -> float:
        return REGISTRY.get_sample_value("wallet_proxy_triggers_total", {"outcome": "dead"}) or 0

    (queued,) = stored(staff_app, ("ana", QUEUED))
    sandbox.braze.configure({"paused": ["camp-1"]})
    before = dead_counted()
    clock.advance(seconds=5)  # past the trigger's batch window
    deliverer = deliverer_for(staff_app)
    while deliverer.run_once():
        pass
    assert dead_counted() == before + 1
    client = staff_app.test_client()
    letters = client.get("/support/triggers", headers=BASIC).text
    notice = (
        "The campaign is paused. Resume the campaign to ensure trigger requests will take effect."
    )
    assert queued in letters and notice in letters
    sandbox.braze.configure({"paused": []})
    token = re.search(r'name="csrf_token" value="([^"]+)"', letters).group(1)
    client.post(f"/support/triggers/{queued}/requeue", headers=BASIC, data={"csrf_token": token})
    clock.advance(seconds=5)
    while deliverer.run_once():
        pass
    assert triggers_of(staff_app).outbox.get(queued).state == SENT
    assert [m["external_user_id"] for m in sandbox.braze.stats()["braze_messages"]] == ["ana"]
