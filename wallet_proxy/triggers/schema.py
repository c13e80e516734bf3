"""The body SessionM posts to `POST /v1/braze/triggers`, checked before anything is stored.

Strict about shape (an unknown field is refused: a typo must not silently drop an offer's
title from a message), liberal about values SessionM writes loosely: ids that arrive as
numbers, null for "nothing", .NET-style dates. Both `braze_campaign_id` and
`braze_canvas_id` appear in SessionM's template, so an empty or null one counts as absent.
"""

from __future__ import annotations

import re

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from ..errors import InvalidRequest
from ..rules import CUSTOMER_ID_RE as ID_RE
from ..rules import CUSTOMER_ID_RULE as ID_RULE
from ..rules import MAX_JSON_NUMBER
from ..schemas import Text, UtcDateTime, WholeNumber

BRAZE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
BRAZE_ID_RULE = "1 to 128 characters of letters, digits, _ and -"
# Loose on purpose: Braze, not us, decides what an address is; this only stops garbage.
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}\Z")
ENRICHMENTS = ("wallet",)
TEXT_LIMIT = 10_000


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _text(**kwargs) -> Text:
    return Text(load_default="", validate=validate.Length(max=TEXT_LIMIT), **kwargs)


class CustomerSchema(_Strict):
    external_id = fields.String(
        required=True,
        validate=validate.Regexp(ID_RE, error=f"must be {ID_RULE}."),
        error_messages={"null": "is required."},
    )
    email = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(EMAIL_RE, error="must be an email address."),
    )
    sessionm_user_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(ID_RE, error=f"must be {ID_RULE}."),
    )

    @pre_load
    def _blank_is_absent(self, data, **_kwargs):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k != "external_id" and v == "")}
        return data


class OfferSchema(_Strict):
    offer_id = _text()
    title = _text()
    user_offer_id = _text()
    description = _text()
    terms = _text()
    logo_url = _text()
    pos_discount_id = _text()
    expires_at = UtcDateTime(load_default=None)


class PointsSchema(_Strict):
    # Also when it comes as a string ("1e308"), which the body's number rule can't see.
    award_amount = WholeNumber(
        load_default=0,
        validate=validate.Range(
            -MAX_JSON_NUMBER,
            MAX_JSON_NUMBER,
            error=f"must lie within \u00b1{MAX_JSON_NUMBER} (2^53 - 1).",
        ),
    )
    account_name = _text()


class CampaignSchema(_Strict):
    id = _text()
    name = _text()
    runtime = _text()
    custom = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)


class TriggerBody(_Strict):
    """Exactly one of the two Braze ids; a customer unless broadcast, never with it."""

    braze_campaign_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(BRAZE_ID_RE, error=f"must be {BRAZE_ID_RULE}."),
    )
    braze_canvas_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(BRAZE_ID_RE, error=f"must be {BRAZE_ID_RULE}."),
    )
    broadcast = fields.Boolean(load_default=False)
    customer = fields.Nested(CustomerSchema, load_default=None, allow_none=True)
    enrich = fields.List(
        fields.String(validate=validate.OneOf(ENRICHMENTS, error="must be one of: wallet.")),
        load_default=list,
        validate=validate.Length(max=8, error="must list at most 8 enrichments."),
    )
    offer = fields.Nested(OfferSchema, load_default=None, allow_none=True)
    points = fields.Nested(PointsSchema, load_default=None, allow_none=True)
    event = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    campaign = fields.Nested(CampaignSchema, load_default=None, allow_none=True)

    @pre_load
    def _blank_ids_are_absent(self, data, **_kwargs):
        if isinstance(data, dict):
            for name in ("braze_campaign_id", "braze_canvas_id"):
                if data.get(name) == "":
                    data = {**data, name: None}
        return data

    @validates_schema
    def _combinations(self, data, **_kwargs):
        given = [n for n in ("braze_campaign_id", "braze_canvas_id") if data.get(n)]
        if len(given) != 1:
            raise ValidationError(
                "exactly one of braze_campaign_id and braze_canvas_id is required.",
                "braze_campaign_id",
            )
        customer = data.get("customer")
        if data.get("broadcast") and customer is not None:
            raise ValidationError(
                "must be left out with broadcast: Braze sends a broadcast to the whole "
                "segment and refuses recipients.",
                "customer",
            )
        if not data.get("broadcast") and customer is None:
            raise ValidationError("is required unless broadcast is true.", "customer")
        if "wallet" in (data.get("enrich") or []) and not (customer or {}).get("sessionm_user_id"):
            raise ValidationError("wallet needs customer.sessionm_user_id.", "enrich")

    @post_load
    def _nothing_is_empty(self, data, **_kwargs):
        """Null sections become empty ones, so the mapping never asks "is it there?"."""
        for name, schema in (("offer", OfferSchema), ("points", PointsSchema)):
            if data.get(name) is None:
                data[name] = schema().load({})
        if data.get("campaign") is None:
            data["campaign"] = CampaignSchema().load({})
        if data["campaign"].get("custom") is None:
            data["campaign"]["custom"] = {}
        if data.get("event") is None:
            data["event"] = {}
        data["enrich"] = sorted(set(data["enrich"]))
        return data


TRIGGER_BODY = TriggerBody()

_PLAIN = {
    "Unknown field.": "is not a known field.",
    "Missing data for required field.": "is required.",
    "Not a valid string.": "must be a string.",
    "Not a valid boolean.": "must be true or false.",
    "Not a valid mapping type.": "must be a JSON object.",
    "Invalid input type.": "must be a JSON object.",
    "Not a valid list.": "must be a list.",
    "Field may not be null.": "can't be null.",
}


def problem(messages: dict | list) -> str:
    """Marshmallow's nested messages as one line naming the field: `offer.title must be ...`."""
    path: list[str] = []
    found: object = messages
    while isinstance(found, dict):
        name, found = min(found.items(), key=lambda item: str(item[0]))
        path.append(f"[{name}]" if isinstance(name, int) else str(name))
    text = found[0] if isinstance(found, list) and found else str(found)
    label = ".".join(path).replace(".[", "[")
    if label in ("", "_schema"):
        return 'The body must be a JSON object like {"braze_campaign_id": "...", ...}.'
    return f"{label[:80]} {_PLAIN.get(text, text)}"


def load_trigger_body(data: object) -> dict:
    """A decoded JSON body to the checked trigger, or InvalidRequest naming the problem."""
    try:
        return TRIGGER_BODY.load(data)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise InvalidRequest(problem(exc.messages)) from None
