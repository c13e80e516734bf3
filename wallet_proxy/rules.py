"""What input we accept: the one home of every rule on ids, cultures, limits and tags.

The API's views, the support pages, the bulk CLI and the settings all import these,
so a rule and its message are written once and read the same everywhere. Each check
raises InvalidRequest with a message that names the field and says what is allowed;
callers outside HTTP (settings, CSV rows) reword it for their reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates
from werkzeug.exceptions import RequestEntityTooLarge

from .braze_users import BRAZE_ID, EMAIL, EXTERNAL_ID, KINDS, USER_ALIAS, BrazeUser
from .errors import InvalidRequest

# SessionM user ids, as they appear in the wallet URL Braze calls.
USER_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ - @ + :"
USER_ID_RE = re.compile(r"^[A-Za-z0-9._\-@+:]{1,128}\Z")

# Any customer id SessionM Core takes (user or external id), one URL path segment.
CUSTOMER_ID_RULE = "1 to 255 characters without control characters, and not '.' or '..'"
CUSTOMER_ID_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,255}\Z")

# Braze's campaign, Canvas and user (braze_id) ids.
BRAZE_ID_RULE = "1 to 128 characters of letters, digits, _ and -"
BRAZE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
# Loose on purpose: Braze, not us, decides what an address is; this only stops garbage.
EMAIL_RULE = "an email address"
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}\Z")
# Each way of naming a Braze user (braze_users.py): an external id, a user alias's name and
# label are any customer id; Braze's own ids look like its campaign ids.
BRAZE_USER_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    EXTERNAL_ID: (CUSTOMER_ID_RE, CUSTOMER_ID_RULE),
    BRAZE_ID: (BRAZE_ID_RE, BRAZE_ID_RULE),
    USER_ALIAS: (CUSTOMER_ID_RE, CUSTOMER_ID_RULE),
    EMAIL: (EMAIL_RE, EMAIL_RULE),
}

DEFAULT_CULTURE = "en-US"
CULTURE_RULE = "like en, en-US, es-419 or zh-Hant-TW (any case; es_ES as Braze writes locales)"
# Language, then an optional script and region, joined by - or _ (Braze's most_recent_locale
# reads es_ES). BCP 47 tags are case-insensitive, so any case is the same culture.
_CULTURE = r"[A-Za-z]{2,3}([-_][A-Za-z]{4})?([-_](?:[A-Za-z]{2}|[0-9]{3}))?"
CULTURE_RE = re.compile(rf"^{_CULTURE}\Z")
OPTIONAL_CULTURE_RE = re.compile(rf"^(?:{_CULTURE})?\Z")  # in a query, empty means the default

MAX_LIMIT = 1000
LIMIT_RE = re.compile(r"^[0-9]{1,4}\Z")

TAG_RULE = "1 to 64 characters of letters, digits, _ - . :"
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
MAX_TAGS = 20
MAX_TTL = 31_536_000


def canonical_culture(value: str) -> str | None:
    """The one spelling of a culture, or None when `value` is not one.

    `es_ES`, `ES-es` and `es-es` all name es-ES: BCP 47's conventional case (language lower,
    script title, region upper) joined by hyphens. Every culture the service holds is in this
    form, so one culture is one cache key, one SessionM call and one answer's `culture`.
    """
    if not CULTURE_RE.match(value):
        return None
    language, *subtags = value.replace("_", "-").split("-")
    return "-".join(
        [language.lower(), *(tag.title() if len(tag) == 4 else tag.upper() for tag in subtags)]
    )


def check_braze_user(kind: str, value: str, alias_label: str = "") -> BrazeUser:
    """A Braze user named by hand (`kind`, and for a user alias its label), or InvalidRequest."""
    if kind not in BRAZE_USER_RULES:
        raise InvalidRequest(f"A Braze user is named by one of {', '.join(KINDS)}.")
    pattern, rule = BRAZE_USER_RULES[kind]
    if not pattern.match(value):
        raise InvalidRequest(f"The {kind} must be {rule}.")
    if kind != USER_ALIAS:
        return BrazeUser(kind, value)
    if not CUSTOMER_ID_RE.match(alias_label):
        raise InvalidRequest(f"The alias_label must be {CUSTOMER_ID_RULE}.")
    return BrazeUser(kind, value, alias_label)


def check_user_id(user_id: str) -> str:
    if not USER_ID_RE.match(user_id):
        raise InvalidRequest(f"user_id must be {USER_ID_RULE}")
    return user_id


def check_culture(culture: str) -> str:
    """The culture in its one spelling (canonical_culture), or InvalidRequest."""
    canonical = canonical_culture(culture)
    if canonical is None:
        raise InvalidRequest(f"culture must look {CULTURE_RULE}.")
    return canonical


def check_customer_id(customer_id: str) -> str:
    if not CUSTOMER_ID_RE.match(customer_id) or customer_id in (".", ".."):
        raise InvalidRequest(f"The customer id must be {CUSTOMER_ID_RULE}.")
    return customer_id


@dataclass(frozen=True, slots=True)
class WalletQuery:
    """Query of GET /v1/wallets/<id>; unknown parameters (cache-busters) are ignored."""

    user_id: str
    culture: str | None  # in its one spelling (canonical_culture); None: the service's default
    limit: int | None


def parse_wallet_query(user_id: str, args: Mapping[str, str]) -> WalletQuery:
    """Checked by hand rather than by a schema: this runs on every cache hit."""
    check_user_id(user_id)
    # `in` first: werkzeug's MultiDict.get builds an exception for every missing key,
    # which doubled the cost of this function on the cache-hit path.
    # An empty culture (a blank ${language} in Braze) means the default.
    culture = (args["culture"] if "culture" in args else None) or None  # noqa: SIM401
    if culture is not None:
        culture = check_culture(culture)
    raw_limit = args["limit"] if "limit" in args else None  # noqa: SIM401
    limit = None
    if raw_limit is not None:
        if not LIMIT_RE.match(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
        limit = int(raw_limit)
    return WalletQuery(user_id, culture, limit)


class WalletQuerySchema(Schema):
    """The same query as the contract states it (openapi.py), from the same rules; a test
    holds the two together. Unknown parameters (cache-busters) are ignored."""

    class Meta:
        unknown = EXCLUDE

    culture = fields.String(
        validate=validate.Regexp(OPTIONAL_CULTURE_RE),
        metadata={"description": f"A culture {CULTURE_RULE}; empty or absent: the default."},
    )
    limit = fields.Integer(
        validate=validate.Range(1, MAX_LIMIT),
        metadata={"description": "At most this many offers (soonest-expiring first)."},
    )


class Tags(TypedDict):
    tags: list[str]
    ttl: int | None  # None: a counter tag


class WholeNumber(fields.Integer):
    """A JSON integer, also when written 60.0 (JSON Schema counts that as an integer, so the
    contract does); never a string, a boolean or a fraction."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._validated(value)


class TagsBody(Schema):
    """`{"tags": [...], "ttl": n}`; an unknown field is refused, not ignored (a typo of `ttl`
    would otherwise silently turn an expiring tag into a counter)."""

    class Meta:
        unknown = RAISE

    tags = fields.List(
        fields.String(
            validate=validate.Regexp(TAG_RE, error=f"must be {TAG_RULE} (like braze_test).")
        ),
        required=True,
        validate=validate.Length(1, MAX_TAGS, error=f"must hold 1 to {MAX_TAGS} tags."),
        metadata={"uniqueItems": True},  # `_distinct` below; stated for the contract (openapi.py)
    )
    ttl = WholeNumber(
        strict=True,
        load_default=None,
        allow_none=False,
        validate=validate.Range(1, MAX_TTL, error=f"must be a whole number from 1 to {MAX_TTL}."),
        error_messages={
            "invalid": f"must be a whole number from 1 to {MAX_TTL} (leave it out for a counter).",
            "null": "can't be null: leave it out for a counter tag.",
        },
    )

    @validates("tags")
    def _distinct(self, value: list[str], **_kwargs: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("must not repeat a tag.")


TAGS_BODY = TagsBody()

_PLAIN = {
    "Unknown field.": "is not a known field (only tags and ttl).",
    "Missing data for required field.": "is required.",
    "Not a valid list.": "must be a list of tags.",
    "Not a valid string.": "must be a string.",
}


def problem(messages: Mapping[Any, Any] | list[Any]) -> str:
    """Marshmallow's nested messages as one line naming the field: `tags[2] must be ...`."""
    label, found = "", messages
    while isinstance(found, Mapping):
        name, found = min(found.items(), key=lambda item: str(item[0]))
        label += f"[{name}]" if isinstance(name, int) else name
    if label == "_schema":
        return 'The body must be a JSON object like {"tags": ["braze_test"], "ttl": 2592000}.'
    return f"{label[:64]} {_PLAIN.get(found[0], found[0])}"


def load_tags(data: Any) -> Tags:
    """Decoded JSON to `{"tags", "ttl"}`, or InvalidRequest naming the problem."""
    try:
        return cast(Tags, TAGS_BODY.load(data))
    except ValidationError as exc:
        raise InvalidRequest(problem(exc.messages)) from None


# Objects and arrays within each other. Python's decoder gives up near 1,000 (and the
# code walking the result before that); no body we take needs more than a few.
MAX_JSON_DEPTH = 32
# The integers a 64-bit float holds exactly, the range RFC 8259 (section 6) names as the
# one where JSON readers agree: Braze treats floats and doubles alike (its docs), so a
# larger number sent on may reach Liquid rounded.
MAX_JSON_NUMBER = 2**53 - 1
_JSON_TOKEN = re.compile(
    r'(?P<string>"[^"\\]*(?:\\.[^"\\]*)*")(?P<key>\s*:)?'
    r"|(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<constant>NaN|-?Infinity)"
    r"|[\[\]{},]",
    re.DOTALL,
)


def json_body(data: bytes, *, max_bytes: int, example: str) -> Any:
    """A JSON request body of at most `max_bytes`, decoded, within `check_json_text`'s bounds.

    The view reads at most `max_bytes + 1` (its `max_content_length`): a declared length
    over the cap is refused before reading, and a chunked body has none, so one byte over
    the cap is how a body that goes on is told from one that ends at the cap.
    """
    if len(data) > max_bytes:
        raise RequestEntityTooLarge(f"The body is over {max_bytes // 1024} KB.")
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does
    except ValueError:
        raise InvalidRequest(f"The body must be JSON like {example}.") from None
    check_json_text(text)
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequest(f"The body must be JSON like {example}.") from None


def check_json_text(text: str) -> None:
    """Refuse, naming the field, JSON nested deeper than MAX_JSON_DEPTH, and numbers that are
    not finite (NaN, Infinity: not JSON at all, though Python reads them) or beyond
    MAX_JSON_NUMBER. One pass over the text, before it is decoded, so nothing recurses."""
    path: list[str | int] = []  # per open object its current key, per open array the index
    for token in _JSON_TOKEN.finditer(text):
        kind = token.lastgroup  # None for punctuation; "string" (a value) needs nothing
        if kind is None:
            found = token.group()
            if found in ("[", "{"):
                if len(path) == MAX_JSON_DEPTH:
                    raise InvalidRequest(
                        f"{_json_path(path)} is nested deeper than {MAX_JSON_DEPTH} levels "
                        "of objects and arrays."
                    )
                path.append(0 if found == "[" else "")
            elif found == ",":
                if path and isinstance(path[-1], int):
                    path[-1] += 1
            elif path:
                path.pop()
        elif kind == "key":
            if path and isinstance(path[-1], str):
                path[-1] = _json_key(token.group("string"))
        elif kind == "constant":
            raise InvalidRequest(
                f"{_json_path(path)} is {token.group()}, which is not JSON: send a number."
            )
        elif kind == "number" and not _holdable(token.group()):
            raise InvalidRequest(
                f"{_json_path(path)} is out of range: numbers must lie within "
                f"\u00b1{MAX_JSON_NUMBER} (2^53 - 1, which every JSON reader holds exactly)."
            )


def _holdable(number: str) -> bool:
    if number.lstrip("-").isdigit():  # an integer: no float rounds it, and no 4,300-digit parse
        return len(number) <= 17 and abs(int(number)) <= MAX_JSON_NUMBER
    return abs(float(number)) <= MAX_JSON_NUMBER  # 1e400 reads as inf


def _json_key(string: str) -> str:
    if "\\" not in string:  # no escapes: the common case, without a decoder call
        return string[1:-1]
    try:
        return str(json.loads(string))
    except ValueError:
        return string[1:-1]


def _json_path(path: list[str | int]) -> str:
    """`event.items[3].name`, cut to 80 characters; `The body` for the body itself."""
    label = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    label = label.removeprefix(".")
    return (label[:79] + "\u2026" if len(label) > 80 else label) or "The body"


# X-Request-ID from a front proxy or a caller: kept when it looks like an id (a UUID,
# nginx's $request_id, base64), replaced by one of ours otherwise; it is logged and echoed.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}\Z")


def valid_request_id(value: str) -> bool:
    return REQUEST_ID_RE.match(value) is not None
