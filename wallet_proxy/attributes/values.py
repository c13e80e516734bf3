"""The loyalty attributes of a wallet at a moment: their names, their types as Braze wants
them, and which of them differ from what a profile last got.

Braze bills data points, "any attribute set on an end user profile", and asks to "only
pass deltas (changing data)" (`/users/track`), so a write carries only what changed.
Types are what Braze segments on: whole numbers as JSON integers, the next expiry as an
ISO 8601 time (Braze: dates "must be stored in the ISO 8601 format"), and null where there
is none, which removes the attribute ("To remove a profile attribute, set it to `null`").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..wallet import Wallet, expiry_z, iso_z, live_view

AVAILABLE_POINTS = "sessionm_available_points"
TOTAL_POINTS = "sessionm_total_points"
OFFER_COUNT = "sessionm_offer_count"
NEXT_OFFER_EXPIRES_AT = "sessionm_next_offer_expires_at"
SYNCED_AT = "sessionm_synced_at"  # only when asked (`attributes sync --stamp`)
NAMES = (AVAILABLE_POINTS, TOTAL_POINTS, OFFER_COUNT, NEXT_OFFER_EXPIRES_AT)

Attributes = dict[str, int | str | None]


@dataclass(frozen=True, slots=True)
class Loyalty:
    """What the attributes say of one wallet at one moment."""

    available_points: int
    total_points: int
    offer_count: int  # live offers: not expired, redeemable
    next_expiry: datetime | None  # the soonest live offer's; None when none expires


def loyalty_of(wallet: Wallet, now: datetime) -> Loyalty:
    live = live_view(wallet, now).live  # soonest-expiring first, never-expiring last
    first = live[0].expires_at if live else None
    return Loyalty(wallet.available_points, wallet.total_points, len(live), first)


def attributes_of(loyalty: Loyalty, *, synced_at: datetime | None = None) -> Attributes:
    """Every attribute, as Braze is to hold it; with `synced_at`, the stamp too."""
    found: Attributes = {
        AVAILABLE_POINTS: loyalty.available_points,
        TOTAL_POINTS: loyalty.total_points,
        OFFER_COUNT: loyalty.offer_count,
        NEXT_OFFER_EXPIRES_AT: expiry_z(loyalty.next_expiry) if loyalty.next_expiry else None,
    }
    if synced_at is not None:
        found[SYNCED_AT] = iso_z(synced_at)
    return found


def changed(attributes: Attributes, written: Mapping[str, object] | None) -> Attributes:
    """The attributes the profile doesn't hold as they are: all of them when nothing is
    known to have been written (a null too: Braze may hold a value from before)."""
    if written is None:
        return dict(attributes)
    return {
        name: value
        for name, value in attributes.items()
        if name not in written or written[name] != value
    }
