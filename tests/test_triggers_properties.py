"""The trigger body's rules and its mapping to Braze properties (pure functions)."""

from __future__ import annotations

import json

import pytest

from wallet_proxy.braze_users import (
    BRAZE_ID,
    DEFAULT_PRIORITIZATION,
    EMAIL,
    EXTERNAL_ID,
    USER_ALIAS,
    BrazeUser,
)
from wallet_proxy.errors import InvalidRequest
from wallet_proxy.triggers.model import CAMPAIGN, CANVAS, Trigger
from wallet_proxy.triggers.properties import (
    MAX_OBJECT_BYTES,
    WALLET_UNKNOWN,
    build_trigger,
    object_bytes,
    with_wallet,
)
from wallet_proxy.triggers.schema import load_trigger_body

FULL = {
    "braze_campaign_id": "2b3c0f1e-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
    "broadcast": False,
    "customer": {
        "external_id": "cust-42",
        "email": "ana@example.com",
        "sessionm_user_id": "sm-42",
    },
    "offer": {
        "offer_id": 1234,
        "title": "10 % off",
        "user_offer_id": "uo-9",
        "description": "On any coffee",
        "terms": "One per visit",
        "logo_url": "https://cdn.example.com/logo.png",
        "pos_discount_id": "POS-7",
        "expires_at": "2030-06-30T23:59:59.9990000",
    },
    "points": {"award_amount": "150", "account_name": "Loyalty"},
    "event": {"type": "purchase", "store": {"id": 7}},
    "campaign": {"id": "c-1", "name": "Summer", "runtime": "2030-06-01", "custom": {"tier": 2}},
}

KEYS = {
    "offer_id": str,
    "offer_title": str,
    "user_offer_id": str,
    "offer_description": str,
    "offer_terms": str,
    "offer_logo_url": str,
    "pos_discount_id": str,
    "offer_expires_at": str,
    "point_award_amount": int,
    "point_account_name": str,
    "campaign_id": str,
    "campaign_name": str,
    "campaign_runtime": str,
    "campaign_custom": dict,
    "event": dict,
}


def trigger(
    body: dict, *, set_email: bool = False, prioritization=DEFAULT_PRIORITIZATION
) -> Trigger:
    return build_trigger(
        load_trigger_body(body), set_email=set_email, prioritization=prioritization
    )


def test_full_body_maps_to_flat_properties_for_a_campaign():
    made = trigger(FULL)
    assert made.kind == CAMPAIGN
    assert made.target_id == FULL["braze_campaign_id"]
    assert made.target == f"campaign:{FULL['braze_campaign_id']}"
    assert made.recipient == BrazeUser(EXTERNAL_ID, "cust-42")
    assert made.broadcast is False
    assert made.attributes == {}  # the email is not set on the profile unless configured
    assert made.wallet_user_id is None
    assert made.properties == {
        "offer_id": "1234",
        "offer_title": "10 % off",
        "user_offer_id": "uo-9",
        "offer_description": "On any coffee",
        "offer_terms": "One per visit",
        "offer_logo_url": "https://cdn.example.com/logo.png",
        "pos_discount_id": "POS-7",
        "offer_expires_at": "2030-06-30T23:59:59Z",
        "point_award_amount": 150,
        "point_account_name": "Loyalty",
        "campaign_id": "c-1",
        "campaign_name": "Summer",
        "campaign_runtime": "2030-06-01",
        "campaign_custom": {"tier": 2},
        "event": {"type": "purchase", "store": {"id": 7}},
    }


def test_canvas_gets_the_same_properties():
    body = {**FULL, "braze_campaign_id": None, "braze_canvas_id": "canvas-1"}
    made = trigger(body)
    assert made.kind == CANVAS
    assert made.target == "canvas:canvas-1"
    assert made.properties == trigger(FULL).properties


def test_minimal_body_has_every_key_with_its_stable_type():
    made = trigger({"braze_canvas_id": "cv", "customer": {"external_id": "x"}})
    assert {k: type(v) for k, v in made.properties.items()} == KEYS
    assert made.properties["point_award_amount"] == 0
    assert made.properties["offer_expires_at"] == ""
    assert made.properties["campaign_custom"] == {} and made.properties["event"] == {}


def test_nulls_from_sessionm_become_empty_values():
    body = {
        "braze_campaign_id": "c",
        "braze_canvas_id": "",  # SessionM's template carries both ids
        "customer": {"external_id": "x", "email": "", "sessionm_user_id": None},
        "offer": {"title": None, "expires_at": None, "offer_id": None},
        "points": {"award_amount": None, "account_name": None},
        "event": None,
        "campaign": {"custom": None, "id": None},
    }
    made = trigger(body)
    assert {k: type(v) for k, v in made.properties.items()} == KEYS
    assert made.properties["offer_title"] == "" and made.properties["point_award_amount"] == 0


def test_email_goes_to_attributes_only_when_configured():
    assert trigger(FULL, set_email=True).attributes == {"email": "ana@example.com"}
    no_email = {**FULL, "customer": {"external_id": "x"}}
    assert trigger(no_email, set_email=True).attributes == {}


def test_wallet_enrichment_reserves_its_keys():
    made = trigger({**FULL, "enrich": ["wallet", "wallet"]})
    assert made.wallet_user_id == "sm-42"
    assert made.properties["wallet_available_points"] == WALLET_UNKNOWN
    assert made.properties["wallet_offer_count"] == WALLET_UNKNOWN
    filled = with_wallet(made.properties, 900, 3)
    assert filled["wallet_available_points"] == 900 and filled["wallet_offer_count"] == 3


def test_attributes_enrichment_keeps_the_sessionm_id_and_old_fingerprints():
    made = trigger({**FULL, "enrich": ["attributes"]})
    assert made.attributes_user_id == "sm-42" and made.wallet_user_id is None
    assert "wallet_available_points" not in made.properties
    assert json.loads(made.to_json())["attributes_user_id"] == "sm-42"
    assert Trigger.from_json(made.to_json()) == made
    # A trigger without it is stored as before it existed: its fingerprint is unchanged.
    plain = trigger(FULL)
    assert "attributes_user_id" not in plain.to_json(canonical=True)
    assert Trigger.from_json(plain.to_json()) == plain


def test_broadcast_needs_no_customer():
    made = trigger({"braze_campaign_id": "c", "broadcast": True})
    assert made.broadcast is True and made.recipient is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"customer": {"external_id": "x"}}, "braze_campaign_id exactly one of"),
        (
            {"braze_campaign_id": "a", "braze_canvas_id": "b", "customer": {"external_id": "x"}},
            "braze_campaign_id exactly one of",
        ),
        ({"braze_campaign_id": "a"}, "customer is required unless broadcast"),
        (
            {"braze_campaign_id": "a", "broadcast": True, "customer": {"external_id": "x"}},
            "customer must be left out with broadcast",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x"}, "enrich": ["wallet"]},
            "enrich wallet needs customer.sessionm_user_id",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x"}, "enrich": ["attributes"]},
            "enrich attributes needs customer.sessionm_user_id",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x"}, "enrich": ["points"]},
            "enrich[0] must be one of",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x"}, "colour": 1},
            "colour is not a known field",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x"}, "offer": {"titel": 1}},
            "offer.titel is not a known field",
        ),
        ({"braze_campaign_id": "a b", "customer": {"external_id": "x"}}, "braze_campaign_id must"),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "\x07"}},
            "customer.external_id must",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": ""}},
            "customer needs one of external_id, braze_id, user_alias or email",
        ),
        (
            {"braze_campaign_id": "a", "customer": {}},
            "customer needs one of external_id, braze_id, user_alias or email",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x", "braze_id": "b"}},
            "customer names the customer by external_id and braze_id: give at most one of "
            "external_id, braze_id, user_alias",
        ),
        (
            {
                "braze_campaign_id": "a",
                "customer": {
                    "braze_id": "b",
                    "user_alias": {"alias_name": "n", "alias_label": "l"},
                    "email": "a@example.com",
                },
            },
            "customer names the customer by braze_id and user_alias",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"braze_id": "not a braze id"}},
            "customer.braze_id must be 1 to 128 characters",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"user_alias": {"alias_name": "n"}}},
            "customer.user_alias.alias_label is required",
        ),
        (
            {
                "braze_campaign_id": "a",
                "customer": {"user_alias": {"alias_name": "n", "alias_label": "l", "x": 1}},
            },
            "customer.user_alias.x is not a known field",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"user_alias": "n"}},
            "customer.user_alias must be a JSON object",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x", "email": "nope"}},
            "customer.email must be an email",
        ),
        (
            {"braze_campaign_id": "a", "customer": {"external_id": "x"}, "event": [1]},
            "event must be a JSON object",
        ),
        (
            {
                "braze_campaign_id": "a",
                "customer": {"external_id": "x"},
                "offer": {"expires_at": "soon"},
            },
            "offer.expires_at Not an ISO 8601 date",
        ),
        (
            {
                "braze_campaign_id": "a",
                "customer": {"external_id": "x"},
                "points": {"award_amount": "lots"},
            },
            "points.award_amount Not a number",
        ),
        ([1, 2], "The body must be a JSON object"),
        ("text", "The body must be a JSON object"),
    ],
)
def test_bad_bodies_are_refused_with_one_line_naming_the_field(body, message):
    with pytest.raises(InvalidRequest) as caught:
        load_trigger_body(body)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_properties_over_50_kb_are_refused_before_storing():
    fits = {**FULL, "event": {"blob": ""}}
    room = MAX_OBJECT_BYTES - object_bytes(trigger(fits).properties)
    assert object_bytes(trigger({**FULL, "event": {"blob": "x" * room}}).properties) == (
        MAX_OBJECT_BYTES
    )
    with pytest.raises(InvalidRequest, match="at most 51200 bytes of trigger_properties"):
        trigger({**FULL, "event": {"blob": "x" * (room + 1)}})
    canvas = {**FULL, "braze_campaign_id": None, "braze_canvas_id": "cv"}
    with pytest.raises(InvalidRequest, match="of context"):
        trigger({**canvas, "event": {"blob": "é" * room}})  # 2 bytes each in UTF-8


def test_trigger_survives_its_json_form():
    made = trigger({**FULL, "enrich": ["wallet"]}, set_email=True)
    assert Trigger.from_json(made.to_json()) == made
    for customer in (
        {"braze_id": "5f0c6b0e5a114b0b9d1e0001"},
        {"user_alias": {"alias_name": "123", "alias_label": "loyalty_id"}},
        {"email": "Ana@Example.com"},
    ):
        other = trigger({**FULL, "customer": customer})
        assert Trigger.from_json(other.to_json()) == other


def test_an_external_id_is_stored_as_before_the_other_kinds():
    """Triggers stored by the previous version load, and a repeat of one (same
    Idempotency-Key, same body) still has its fingerprint: not a 422 after an upgrade."""
    made = trigger(FULL)
    stored = made.to_json()
    assert '"recipient":"cust-42"' in stored
    assert Trigger.from_json(stored).recipient == BrazeUser(EXTERNAL_ID, "cust-42")
    assert made.recipient_index == "cust-42"


def test_every_recipient_kind_braze_takes():
    def customer(**fields):
        return trigger({**FULL, "customer": fields}, set_email=True)

    by_braze_id = customer(braze_id="5f0c6b0e5a114b0b9d1e0001", email="ana@example.com")
    assert by_braze_id.recipient == BrazeUser(BRAZE_ID, "5f0c6b0e5a114b0b9d1e0001")
    assert by_braze_id.attributes == {"email": "ana@example.com"}  # set beside an id
    alias = {"alias_name": "123", "alias_label": "loyalty_id"}
    by_alias = customer(user_alias=alias)
    assert by_alias.recipient == BrazeUser(USER_ALIAS, "123", "loyalty_id")
    # The email names the customer only when no id does, with the prioritization.
    by_email = customer(email="Ana@Example.com", sessionm_user_id="sm-1")
    assert by_email.recipient == BrazeUser(
        EMAIL, "Ana@Example.com", prioritization=("identified", "most_recently_updated")
    )
    assert by_email.attributes == {}  # not also an attribute: it is the identifier
    chosen = trigger(
        {**FULL, "customer": {"email": "a@example.com"}}, prioritization=["unidentified"]
    )
    assert chosen.recipient.prioritization == ("unidentified",)
    # SessionM's template carries every field: blanks are absent, also a blank alias.
    blanks = {
        "external_id": "",
        "braze_id": None,
        "user_alias": {"alias_name": "", "alias_label": ""},
    }
    assert customer(**blanks, email="b@example.com").recipient.kind == EMAIL
