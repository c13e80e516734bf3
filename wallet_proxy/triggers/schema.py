"""The body SessionM posts to `POST /v1/braze/triggers`, checked before anything is stored.

Strict about shape (an unknown field is refused: a typo must not silently drop an offer's
title from a message), liberal about values SessionM writes loosely: ids that arrive as
numbers, null for "nothing", .NET-style dates. SessionM's template carries every field it
may fill (both `braze_campaign_id` and `braze_canvas_id`, each way of naming the customer),
so an empty or null one counts as absent.
"""

from __future__ import annotations

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

from ..braze_users import BRAZE_ID, EMAIL, EXTERNAL_ID, USER_ALIAS, NotOneUser, check_one_user
from ..errors import InvalidRequest
from ..rules import BRAZE_ID_RE, BRAZE_ID_RULE, BRAZE_USER_RULES, MAX_JSON_NUMBER
from ..schemas import Text, UtcDateTime, WholeNumber

ENRICHMENTS = ("wallet", "attributes")
TEXT_LIMIT = 10_000


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _text(**kwargs) -> Text:
    return Text(load_default="", validate=validate.Length(max=TEXT_LIMIT), **kwargs)


def _blanks_dropped(data: object) -> object:
    """A field SessionM's template left empty ("" or null) is a field not given."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if v not in ("", None)}
    return data


def _id_field(kind: str = EXTERNAL_ID, **kwargs) -> fields.String:
    """A string following the rule for `kind` (an external id by default)."""
    pattern, rule = BRAZE_USER_RULES[kind]
    return fields.String(validate=validate.Regexp(pattern, error=f"must be {rule}."), **kwargs)


class UserAliasSchema(_Strict):
    """Braze's user alias object: a name under a label (both required)."""

    alias_name = _id_field(USER_ALIAS, required=True)
    alias_label = _id_field(USER_ALIAS, required=True)

    @pre_load
    def _blank_is_absent(self, data, **_kwargs):
        return _blanks_dropped(data)


class CustomerSchema(_Strict):
    """Who gets the message: at most one of external_id, braze_id and user_alias (Braze
    takes one identifier per recipient), else the email (braze_users.user_from)."""

    external_id = _id_field(load_default=None)
    braze_id = _id_field(BRAZE_ID, load_default=None)
    user_alias = fields.Nested(UserAliasSchema, load_default=None)
    email = _id_field(EMAIL, load_default=None)
    sessionm_user_id = _id_field(load_default=None)

    @pre_load
    def _blank_is_absent(self, data, **_kwargs):
        data = _blanks_dropped(data)
        alias = data.get("user_alias") if isinstance(data, dict) else None
        if isinstance(alias, dict) and not _blanks_dropped(alias):
            data = {k: v for k, v in data.items() if k != "user_alias"}  # all of it blank
        return data

    @validates_schema
    def _one_user(self, data, **_kwargs):
        try:
            check_one_user(data)
        except NotOneUser as exc:
            raise ValidationError(str(exc)) from None


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
        fields.String(
            validate=validate.OneOf(ENRICHMENTS, error="must be one of: wallet, attributes.")
        ),
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
        for enrichment in sorted(set(data.get("enrich") or [])):
            if not (customer or {}).get("sessionm_user_id"):
                raise ValidationError(f"{enrichment} needs customer.sessionm_user_id.", "enrich")

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
    if len(path) > 1 and path[-1] == "_schema":  # a rule across a section's fields
        path.pop()
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
