"""SessionM's trigger body to the flat properties Braze's Liquid reads.

Every key is always present with a stable type, as in the wallet (`""`, `0`, `{}` when
SessionM gave nothing), so a template never has to test whether a key exists:
`{{api_trigger_properties.${offer_title}}}` in a campaign, `{{context.${offer_title}}}`
in a Canvas. Pure functions: the view calls them before storing, the deliverer after
reading the wallet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..braze_users import EMAIL, user_from
from ..errors import InvalidRequest
from ..wallet import iso_z
from .model import CAMPAIGN, CANVAS, Trigger

MAX_OBJECT_BYTES = 50 * 1024  # Braze's limit for trigger_properties, context and attributes
WALLET_UNKNOWN = -1  # the wallet could not be had in time; the message still goes
WALLET_KEYS = ("wallet_available_points", "wallet_offer_count")


def trigger_properties(body: dict) -> dict:
    """The flat properties of a checked body (see schema.TriggerBody)."""
    offer, points, campaign = body["offer"], body["points"], body["campaign"]
    properties = {
        "offer_id": offer["offer_id"],
        "offer_title": offer["title"],
        "user_offer_id": offer["user_offer_id"],
        "offer_description": offer["description"],
        "offer_terms": offer["terms"],
        "offer_logo_url": offer["logo_url"],
        "pos_discount_id": offer["pos_discount_id"],
        "offer_expires_at": iso_z(offer["expires_at"]) if offer["expires_at"] else "",
        "point_award_amount": points["award_amount"],
        "point_account_name": points["account_name"],
        "campaign_id": campaign["id"],
        "campaign_name": campaign["name"],
        "campaign_runtime": campaign["runtime"],
        "campaign_custom": campaign["custom"],
        "event": body["event"],
    }
    if "wallet" in body["enrich"]:
        # Placeholders until delivery, so the size check below already counts them.
        properties.update(dict.fromkeys(WALLET_KEYS, WALLET_UNKNOWN))
    return properties


def with_wallet(properties: dict, available_points: int, offer_count: int) -> dict:
    return {
        **properties,
        "wallet_available_points": available_points,
        "wallet_offer_count": offer_count,
    }


def object_bytes(value: dict) -> int:
    """The size Braze measures: the object as compact UTF-8 JSON."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def build_trigger(body: dict, *, set_email: bool, prioritization: Sequence[str]) -> Trigger:
    """The trigger to store, or InvalidRequest if Braze would refuse it for its size.

    The customer's email names them only when no id does (then with `prioritization`);
    beside an id it is set on the profile before the send when `set_email` asks.
    """
    kind = CAMPAIGN if body["braze_campaign_id"] else CANVAS
    customer = body["customer"]
    recipient = user_from(customer, prioritization=prioritization) if customer else None
    attributes = {}
    if set_email and recipient is not None and recipient.kind != EMAIL and customer["email"]:
        attributes["email"] = customer["email"]
    properties = trigger_properties(body)
    size = object_bytes(properties)
    if size > MAX_OBJECT_BYTES:
        name = "trigger_properties" if kind == CAMPAIGN else "context"
        raise InvalidRequest(
            f"The properties for Braze come to {size} bytes; Braze accepts at most "
            f"{MAX_OBJECT_BYTES} bytes of {name}. Send less in event or campaign.custom."
        )
    return Trigger(
        kind=kind,
        target_id=body["braze_campaign_id"] or body["braze_canvas_id"],
        broadcast=body["broadcast"],
        recipient=recipient,
        attributes=attributes,
        properties=properties,
        wallet_user_id=customer["sessionm_user_id"] if "wallet" in body["enrich"] else None,
        attributes_user_id=(
            customer["sessionm_user_id"] if "attributes" in body["enrich"] else None
        ),
    )
