"""The SessionM boundary: marshmallow schemas that turn Connect JSON into a Wallet.

Liberal in what they accept (SessionM's fields vary by tenant and version, see
docs in shared/reference): unknown fields are excluded, alternative spellings
are folded together, empty values become "" or 0. An offer that can't be read
is dropped by the caller rather than spoiling the whole wallet; an offer whose
expiry can't be read is one of those, since we could not prove it live (that
includes dates that exist in SessionM's time zone but not in UTC, such as
0001-01-01T00:00:00+01:00).

Their work is bounded whatever SessionM sends: a page's offers are read one by
one by the caller (who caps their number), and only an offer's first few media.

Only `offer_id`, `offer_group_id` and `offer_type` of an offer are publicly documented;
the other names read here are our reading of clients and sibling endpoints. An offer
with none of the expiry names we know is marked (`Offer.no_expiry_field`): it loads as
never expiring, which may be wrong, so it is counted and shown rather than trusted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load

from .wallet import Offer

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Media read per offer: the logo is among the first few, and a list of a million
# entries would cost seconds of CPU.
MAX_MEDIA = 20

# Other names older tenants and sibling endpoints use for the same facts, in the order
# they are tried when ours is missing or empty.
SPELLINGS = {
    "user_offer_id": ("id",),
    "title": ("name",),
    "expires_at": ("expiration_date", "redemption_end_date"),
}
EXPIRY_FIELDS = ("expires_at", *SPELLINGS["expires_at"])


class _NullTolerant(fields.Field):
    """Null is a value SessionM sends for "nothing"; each field says what it becomes."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_none", True)
        super().__init__(**kwargs)

    def deserialize(self, value, attr=None, data=None, **kwargs):
        if value is None:
            return self._deserialize(None, attr, data, **kwargs)
        return super().deserialize(value, attr, data, **kwargs)


class Text(_NullTolerant):
    """A string that is never None: ids may arrive as numbers, missing texts as null.

    JSON may carry a lone surrogate (`"\\ud800"`), which no UTF-8 answer can hold: it
    becomes U+FFFD here rather than failing every answer made from this wallet.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError("Not a text value.")
        text = str(value)
        try:
            text.encode()
        except UnicodeEncodeError:
            return LONE_SURROGATE.sub("\ufffd", text)
        return text


class WholeNumber(_NullTolerant):
    """Points as an int whether SessionM sends 100, 100.0 or "100"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or value == "":
            return 0
        if isinstance(value, bool):
            raise ValidationError("Not a number.")
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            raise ValidationError("Not a number.") from None


class UtcDateTime(_NullTolerant):
    """ISO 8601 as SessionM writes it (.NET style, 0 to 7 fractional digits), as aware UTC.

    A value without an offset is taken as UTC, which is what SessionM means.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValidationError("Not a date.")
        try:
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                return moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC)
        except ValueError:
            raise ValidationError("Not an ISO 8601 date.") from None
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            raise ValidationError("A date out of range in UTC.") from None


class MediaSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    uri = Text(load_default="")
    category_name = Text(load_default="")


class OfferSchema(Schema):
    """One issued offer of `user_offers`."""

    class Meta:
        unknown = EXCLUDE

    user_offer_id = Text(load_default="")
    offer_id = Text(load_default="")
    offer_type = Text(load_default="")
    title = Text(load_default="")
    description = Text(load_default="")
    terms = Text(load_default="")
    pos_discount_id = Text(load_default="")
    points = WholeNumber(load_default=0)
    is_redeemable = fields.Boolean(load_default=True, allow_none=True)
    expires_at = UtcDateTime(load_default=None, allow_none=True)
    media = fields.List(fields.Nested(MediaSchema), load_default=list, allow_none=True)
    # Set by fold_spellings, never read from SessionM.
    no_expiry_field = fields.Boolean(load_default=False)

    @pre_load
    def fold_spellings(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("An offer must be an object.")
        data = dict(data)
        # A name we know with a null value is SessionM saying "never"; no name at all is not.
        data["no_expiry_field"] = not any(name in data for name in EXPIRY_FIELDS)
        for wanted, fallbacks in SPELLINGS.items():
            if data.get(wanted) in (None, ""):
                data[wanted] = next(
                    (data[name] for name in fallbacks if data.get(name) not in (None, "")), None
                )
        for fallbacks in SPELLINGS.values():
            for name in fallbacks:
                data.pop(name, None)
        if isinstance(data.get("media"), list):
            data["media"] = data["media"][:MAX_MEDIA]
        else:
            data.pop("media", None)
        return data

    @post_load
    def make_offer(self, data, **kwargs) -> Offer:
        return Offer(
            user_offer_id=data["user_offer_id"],
            offer_id=data["offer_id"],
            offer_type=data["offer_type"],
            title=data["title"],
            description=data["description"],
            terms=data["terms"],
            logo_url=_logo_url(data["media"] or []),
            pos_discount_id=data["pos_discount_id"],
            points=data["points"],
            is_redeemable=data["is_redeemable"] is not False,
            expires_at=data["expires_at"],
            no_expiry_field=data["no_expiry_field"],
        )


def _logo_url(media: list[dict]) -> str:
    """Prefer the image SessionM labels as a logo; else the first image there is."""
    uris = [m for m in media if m.get("uri")]
    for item in uris:
        if "logo" in item.get("category_name", "").lower():
            return item["uri"]
    return uris[0]["uri"] if uris else ""


class RawList(_NullTolerant):
    """A list left as it is (null is an empty one): its items are read one by one later,
    so a page of a million items costs nothing here."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError("Not a list.")
        return value


class PageSchema(Schema):
    """One page of `get_user_offers`' payload; offers are read one by one afterwards."""

    class Meta:
        unknown = EXCLUDE

    user_id = Text(load_default="")
    user_offers = RawList(load_default=list)
    total_records = WholeNumber(load_default=None, allow_none=True)
    total_points = WholeNumber(load_default=0)
    available_points = WholeNumber(load_default=0)


PAGE_SCHEMA = PageSchema()
OFFER_SCHEMA = OfferSchema()

# Each offer field name SessionM may send that the service reads, and what it reads it as.
OFFER_FIELDS_READ = {
    **{name: name for name in OFFER_SCHEMA.fields if name not in ("media", "no_expiry_field")},
    "media": "logo_url",
    **{other: ours for ours, others in SPELLINGS.items() for other in others},
}


@dataclass(frozen=True, slots=True)
class OfferFields:
    """The names (never the values) of the fields SessionM sent in a page of offers: how
    many offers carry each, and how many carry none of the expiry names we know."""

    offers: int
    sent: Counter[str]
    without_expiry_field: int

    @classmethod
    def of(cls, raw_offers: list) -> OfferFields:
        objects = [raw for raw in raw_offers if isinstance(raw, dict)]
        return cls(
            offers=len(objects),
            sent=Counter(name for raw in objects for name in raw),
            without_expiry_field=sum(
                not any(name in raw for name in EXPIRY_FIELDS) for raw in objects
            ),
        )
