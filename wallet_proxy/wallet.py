"""What a wallet is, and what a customer may see of it at a given moment.

The cache keeps the Wallet exactly as SessionM described it; everything that
depends on time (expiry, days left, order) is decided here, at answer time, as
pure functions of (wallet, now). That is how a cached wallet never shows an
offer that expired after it was fetched.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter

EXPIRED = "expired"
NOT_REDEEMABLE = "not_redeemable"
LAST_SECOND = datetime.max.replace(microsecond=0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Offer:
    user_offer_id: str
    offer_id: str
    offer_type: str
    title: str
    description: str
    terms: str
    logo_url: str
    pos_discount_id: str
    points: int
    is_redeemable: bool
    expires_at: datetime | None
    # SessionM sent none of the expiry fields we know (schemas.EXPIRY_FIELDS), so the offer
    # is served as never expiring. Defaults so that cached entries from before it still load.
    no_expiry_field: bool = False


_OFFER_FIELDS = tuple(field.name for field in fields(Offer))
_OFFER_VALUES = attrgetter(*_OFFER_FIELDS)
_EXPIRES_AT = _OFFER_FIELDS.index("expires_at")


def _offer_row(offer: Offer) -> list:
    row = list(_OFFER_VALUES(offer))
    if offer.expires_at is not None:
        row[_EXPIRES_AT] = offer.expires_at.isoformat()
    return row


def _row_offer(row: list) -> Offer:
    row[_EXPIRES_AT] = parse_iso(row[_EXPIRES_AT])
    return Offer(*row)


# Weakly referable: the answer memo (answers.py) refers to wallets without keeping them.
@dataclass(frozen=True, slots=True, weakref_slot=True)
class Wallet:
    user_id: str
    culture: str
    available_points: int
    total_points: int
    offers: tuple[Offer, ...]
    fetched_at: datetime

    def to_dict(self) -> dict:
        """A JSON-ready form, for caches shared between processes: each offer a row of its
        values in field order (rows take less room than objects, in JSON and decoded)."""
        return {
            "user_id": self.user_id,
            "culture": self.culture,
            "available_points": self.available_points,
            "total_points": self.total_points,
            "offers": [_offer_row(offer) for offer in self.offers],
            "fetched_at": self.fetched_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Wallet:
        offers = tuple(_row_offer(row) for row in data["offers"])
        return cls(**{**data, "offers": offers, "fetched_at": parse_iso(data["fetched_at"])})

    def held_bytes(self) -> int:
        """The memory its objects take: every offer, text and date, as CPython sizes them.

        Not the size of its JSON: a text holding one emoji takes 4 bytes a character in
        memory, so JSON can understate what a wallet holds four times over.
        """
        size = sys.getsizeof(self) + sys.getsizeof(self.offers) + sys.getsizeof(self.fetched_at)
        size += sys.getsizeof(self.user_id) + sys.getsizeof(self.culture)
        for offer in self.offers:
            size += sys.getsizeof(offer) + sum(map(sys.getsizeof, _OFFER_VALUES(offer)))
        return size


@dataclass(frozen=True, slots=True)
class LiveView:
    """The offers a customer sees now, and the ones left out with the reason."""

    live: tuple[Offer, ...]
    left_out: tuple[tuple[Offer, str], ...]


def iso_z(moment: datetime) -> str:
    # isoformat, not strftime: "%Y" drops the leading zeros of years before 1000.
    return moment.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def expiry_z(expires_at: datetime) -> str:
    """An expiry to the second, rounded up: cut, an offer live for less than a second more
    would show an expiry already past. (The last second of year 9999 has no next one.)"""
    moment = expires_at.astimezone(UTC)
    if moment.microsecond and moment < LAST_SECOND:
        moment += timedelta(seconds=1)
    return iso_z(moment)


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _expiry_order(offer: Offer) -> tuple:
    # Soonest first, never-expiring last; ids keep equal expiries in a stable order.
    return (
        offer.expires_at is None,
        offer.expires_at or datetime.max.replace(tzinfo=UTC),
        offer.user_offer_id,
        offer.offer_id,
    )


def live_view(wallet: Wallet, now: datetime) -> LiveView:
    live, left_out = [], []
    for offer in wallet.offers:
        if offer.expires_at is not None and offer.expires_at <= now:
            left_out.append((offer, EXPIRED))
        elif not offer.is_redeemable:
            left_out.append((offer, NOT_REDEEMABLE))
        else:
            live.append(offer)
    live.sort(key=_expiry_order)
    left_out.sort(key=lambda pair: _expiry_order(pair[0]))
    return LiveView(tuple(live), tuple(left_out))


def days_left(expires_at: datetime | None, now: datetime) -> int:
    """Whole UTC calendar days until expiry: 0 means "expires today", -1 "never"."""
    if expires_at is None:
        return -1
    return (expires_at.astimezone(UTC).date() - now.astimezone(UTC).date()).days


def offer_answer(offer: Offer, now: datetime) -> dict:
    return {
        "user_offer_id": offer.user_offer_id,
        "offer_id": offer.offer_id,
        "offer_type": offer.offer_type,
        "title": offer.title,
        "description": offer.description,
        "terms": offer.terms,
        "logo_url": offer.logo_url,
        "pos_discount_id": offer.pos_discount_id,
        "points": offer.points,
        "expires_at": expiry_z(offer.expires_at) if offer.expires_at else "",
        "expires_in_days": days_left(offer.expires_at, now),
    }


def wallet_answer(wallet: Wallet, now: datetime, *, limit: int | None, stale: bool) -> dict:
    """The flat, Liquid-friendly object Braze receives: every key, stable types.

    `offers_truncated` is False here; answers.py sets it when it cuts offers to fit
    the answer's size limit.
    """
    body, shown = answer_parts(wallet, now, limit=limit, stale=stale)
    return {**body, "offers": [offer_answer(offer, now) for offer in shown]}


def answer_parts(
    wallet: Wallet, now: datetime, *, limit: int | None, stale: bool
) -> tuple[dict, tuple[Offer, ...]]:
    """`wallet_answer` with its offers still empty, and the offers it shows, in order: for
    answers.py, which encodes them one at a time."""
    live = live_view(wallet, now).live
    body = {
        "user_id": wallet.user_id,
        "culture": wallet.culture,
        "available_points": wallet.available_points,
        "total_points": wallet.total_points,
        "offer_count": len(live),
        "has_offers": bool(live),
        "offers": [],
        "fetched_at": iso_z(wallet.fetched_at),
        "stale": stale,
        "offers_truncated": False,
    }
    return body, live if limit is None else live[:limit]


def answer_changes_at(wallet: Wallet, now: datetime) -> datetime:
    """The next moment `wallet_answer` can differ: an offer expires or the UTC day turns."""
    tomorrow = datetime.combine(
        now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC
    )
    upcoming = [o.expires_at for o in wallet.offers if o.expires_at and o.expires_at > now]
    return min([tomorrow, *upcoming])
