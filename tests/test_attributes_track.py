"""Braze's /users/track as the stand-in keeps its rules, and the client of it, over real HTTP."""

from __future__ import annotations

import logging

import pytest
import requests

from wallet_proxy.attributes.track import TrackClient, attribute_object
from wallet_proxy.braze_rest import BrazeNotProcessed, BrazeRejected
from wallet_proxy.braze_users import BRAZE_ID, EMAIL, EXTERNAL_ID, USER_ALIAS, BrazeUser

from .triggers_helpers import BRAZE_KEY


def track(braze, body, key=BRAZE_KEY) -> requests.Response:
    return requests.post(
        f"{braze.url}/users/track",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )


def objects(count: int, **attributes) -> list[dict]:
    return [{"external_id": f"e{n}", **attributes} for n in range(count)]


def test_75_objects_per_array_and_max_objects_across_them(braze):
    assert track(braze, {"attributes": objects(76, a=1)}).status_code == 400
    both = {"attributes": objects(75, a=1), "events": [{"external_id": "e1"}] * 75}
    answer = track(braze, both)
    assert answer.status_code == 201
    assert answer.json() == {"message": "success", "attributes_processed": 75}

    braze.set(max_objects=50)  # a Monthly Active Users CY 24-25 contract
    refused = track(braze, {"attributes": objects(26, a=1), "events": [{}] * 25})
    assert refused.status_code == 400
    assert "at most 50 objects a request" in refused.json()["message"]
    assert track(braze, {"attributes": objects(50, a=1)}).status_code == 201
    assert track(braze, "not an object").status_code == 400


def test_who_gets_a_profile_and_a_null_removes_an_attribute(braze):
    body = {
        "attributes": [
            {"external_id": "e1", "points": 5, "tier": "gold"},
            {"email": "Ann@Example.com", "points": 7},
            {"braze_id": "b-unknown", "points": 1},  # Braze assigns those: never created
            {"user_alias": {"alias_name": "n", "alias_label": "l"}, "points": 2},
            {
                "user_alias": {"alias_name": "m", "alias_label": "l"},
                "points": 3,
                "_update_existing_only": False,
            },
            {"external_id": "e2", "points": 9, "_update_existing_only": True},
            {"points": 4},  # names nobody
        ]
    }
    answer = track(braze, body)
    assert answer.status_code == 201
    assert answer.json()["attributes_processed"] == 6
    assert answer.json()["errors"] == [
        {
            "type": "one of external_id, braze_id, user_alias, email, phone is required",
            "input_array": "attributes",
            "index": 6,
        }
    ]
    found = {key: p["attributes"] for key, p in braze.braze.profiles().items()}
    assert found == {
        "external_id:e1": {"points": 5, "tier": "gold"},
        "email:ann@example.com": {"points": 7},
        "user_alias:l:m": {"points": 3},
    }
    track(braze, {"attributes": [{"external_id": "e1", "tier": None}]})
    assert braze.braze.profiles()["external_id:e1"]["attributes"] == {"points": 5}


def test_the_burst_limit_answers_429_with_its_window(braze):
    braze.set(track_limit=2, track_window=60)
    answers = [track(braze, {"attributes": objects(1, a=1)}) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"2"}
    reset = {int(a.headers["X-RateLimit-Reset"]) for a in answers}
    assert len(reset) == 1 and reset.pop() % 60 == 0
    assert "Retry-After" not in answers[2].headers  # Braze documents none on a 429


def test_each_identifier_kind_is_named_as_the_attributes_object_names_it(braze):
    users = [
        BrazeUser(EXTERNAL_ID, "ext-1"),
        BrazeUser(BRAZE_ID, "5f0c"),
        BrazeUser(USER_ALIAS, "name", "label"),
        BrazeUser(EMAIL, "a@example.com", prioritization=("identified",)),
    ]
    sent = [attribute_object(user, {"p": 1}) for user in users]
    assert sent == [
        {"external_id": "ext-1", "p": 1},
        {"braze_id": "5f0c", "p": 1},
        {"user_alias": {"alias_name": "name", "alias_label": "label"}, "p": 1},
        {"email": "a@example.com", "p": 1},  # no prioritization in an attributes object
    ]
    client = TrackClient(braze.url, BRAZE_KEY)
    try:
        tracked = client.track(sent)
    finally:
        client.close()
    assert tracked.processed == 4 and tracked.refused == {}
    assert tracked.rate.limit == 3000 and tracked.rate.remaining == 2999


def test_objects_braze_skipped_are_named_by_index(braze):
    braze.set(reject=["ext-2"])
    client = TrackClient(braze.url, BRAZE_KEY)
    try:
        tracked = client.track([{"external_id": f"ext-{n}", "p": 1} for n in range(4)])
    finally:
        client.close()
    assert tracked.processed == 3
    assert tracked.refused == {2: "provided external_id is blacklisted and disallowed"}


def test_a_wrong_key_is_not_processed_with_the_settings_to_check(braze, caplog):
    client = TrackClient(braze.url, "wrong-key-1234")
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(BrazeNotProcessed) as caught:
            client.track([{"external_id": "e", "p": 1}])
    finally:
        client.close()
    assert caught.value.status == 401
    assert "check BRAZE_REST_URL and BRAZE_TRACK_API_KEY" in caplog.text
    assert "wrong-key-1234" not in caplog.text


def test_a_refused_body_is_rejected(braze):
    client = TrackClient(braze.url, BRAZE_KEY)
    try:
        with pytest.raises(BrazeRejected) as caught:
            client.track(objects(76, p=1))
    finally:
        client.close()
    assert caught.value.status == 400 and "at most 75 objects" in caught.value.reason
