"""The live view: what a customer may see of a wallet at a given moment."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from wallet_proxy.wallet import (
    EXPIRED,
    NOT_REDEEMABLE,
    Offer,
    Wallet,
    answer_changes_at,
    days_left,
    live_view,
    offer_answer,
    wallet_answer,
)

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def offer(uid, expires=None, redeemable=True, **texts) -> Offer:
    return Offer(
        user_offer_id=uid,
        offer_id=f"o-{uid}",
        offer_type="manual_fulfillment",
        title=texts.get("title", uid),
        description="",
        terms="",
        logo_url="",
        pos_discount_id="",
        points=0,
        is_redeemable=redeemable,
        expires_at=expires,
    )


def wallet(*offers) -> Wallet:
    return Wallet("u", "en-US", 100, 1000, tuple(offers), NOW - timedelta(seconds=5))


def test_drops_expired_and_not_redeemable_with_reasons():
    view = live_view(
        wallet(
            offer("gone", NOW - timedelta(seconds=1)),
            offer("edge", NOW),
            offer("locked", NOW + timedelta(days=3), redeemable=False),
            offer("ok", NOW + timedelta(days=1)),
        ),
        NOW,
    )
    assert [o.user_offer_id for o in view.live] == ["ok"]
    assert [(o.user_offer_id, why) for o, why in view.left_out] == [
        ("gone", EXPIRED),
        ("edge", EXPIRED),
        ("locked", NOT_REDEEMABLE),
    ]


def test_sorted_soonest_first_never_expiring_last():
    view = live_view(
        wallet(
            offer("never"),
            offer("late", NOW + timedelta(days=30)),
            offer("soon", NOW + timedelta(hours=1)),
            offer("mid", NOW + timedelta(days=3)),
        ),
        NOW,
    )
    assert [o.user_offer_id for o in view.live] == ["soon", "mid", "late", "never"]


def test_days_left_counts_utc_calendar_days():
    assert days_left(None, NOW) == -1
    assert days_left(NOW + timedelta(hours=2), NOW) == 0
    assert days_left(datetime(2026, 11, 29, 0, 0, 1, tzinfo=UTC), NOW) == 1
    assert days_left(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), NOW) == 33


def test_answer_shape_limit_and_count():
    body = wallet_answer(
        wallet(
            offer("a", NOW + timedelta(days=1)),
            offer("b"),
            offer("c", NOW - timedelta(days=1)),
        ),
        NOW,
        limit=1,
        stale=False,
    )
    assert body["offer_count"] == 2
    assert body["has_offers"] is True
    assert [o["user_offer_id"] for o in body["offers"]] == ["a"]
    assert body["offers"][0]["expires_at"] == "2026-11-29T15:00:00Z"
    assert body["offers"][0]["expires_in_days"] == 1
    assert body["fetched_at"] == "2026-11-28T14:59:55Z"
    assert set(body) == {
        "user_id",
        "culture",
        "available_points",
        "total_points",
        "offer_count",
        "has_offers",
        "offers",
        "fetched_at",
        "stale",
        "offers_truncated",
    }


def test_expiries_are_rounded_up_to_the_second():
    shown = [
        offer_answer(offer("a", moment), NOW)["expires_at"]
        for moment in (
            NOW + timedelta(microseconds=1),
            NOW + timedelta(seconds=5),
            datetime(2030, 6, 30, 23, 59, 59, 999999, tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
        )
    ]
    assert shown == [
        "2026-11-28T15:00:01Z",
        "2026-11-28T15:00:05Z",
        "2030-07-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ]


def test_never_expiring_offer_has_empty_date_and_minus_one():
    (only,) = wallet_answer(wallet(offer("b")), NOW, limit=None, stale=True)["offers"]
    assert (only["expires_at"], only["expires_in_days"]) == ("", -1)


def test_answer_changes_at_next_expiry_or_midnight():
    soon = NOW + timedelta(hours=2)
    assert answer_changes_at(wallet(offer("a", soon), offer("b")), NOW) == soon
    midnight = datetime(2026, 11, 29, tzinfo=UTC)
    assert answer_changes_at(wallet(offer("a", NOW + timedelta(days=5))), NOW) == midnight


def test_round_trips_through_a_dict():
    unnamed = replace(offer("c"), no_expiry_field=True)
    original = wallet(offer("a", NOW + timedelta(days=1)), offer("b"), unnamed)
    assert Wallet.from_dict(original.to_dict()) == original


def test_an_answer_is_cut_to_its_size_limit_from_the_latest_expiring_end():
    from wallet_proxy.answers import render_uncached
    from wallet_proxy.wallet_service import HIT, Lookup

    offers = [offer(f"o{n}", NOW + timedelta(days=n)) for n in range(1, 6)]
    lookup = Lookup(wallet(*reversed(offers)), HIT)
    whole = render_uncached(lookup, NOW, None, max_bytes=10**6)
    assert json.loads(whole)["offers_truncated"] is False
    assert render_uncached(lookup, NOW, None, max_bytes=len(whole)) == whole

    cut = json.loads(render_uncached(lookup, NOW, None, max_bytes=len(whole) - 1))
    assert cut["offers_truncated"] is True and cut["offer_count"] == 5
    assert [o["user_offer_id"] for o in cut["offers"]] == ["o1", "o2", "o3", "o4"]

    envelope = json.loads(render_uncached(lookup, NOW, None, max_bytes=400))
    assert (envelope["offers"], envelope["offers_truncated"]) == ([], True)
    assert envelope["has_offers"] is True  # there are offers; none fitted
