"""How a Braze user is named: the identifier kinds Braze takes, and its rules for them.

Braze's recipients object: "You must include one of `external_user_id`, `user_alias`,
`braze_id`, or `email` in this object. Requests must specify only one." An email address
is not an id (several profiles may share one), so it comes with a `prioritization` saying
which profile Braze picks. Every Braze call that names users (the triggers' recipients,
triggers/braze.py; the attributes objects of `/users/track`, attributes/track.py) takes
them from here, and a store indexes them by `BrazeUser.index`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EXTERNAL_ID, BRAZE_ID, USER_ALIAS, EMAIL = "external_id", "braze_id", "user_alias", "email"
KINDS = (EXTERNAL_ID, BRAZE_ID, USER_ALIAS, EMAIL)
# The ids proper: at most one of them names a user; an email only when none does.
IDS = (EXTERNAL_ID, BRAZE_ID, USER_ALIAS)
# Braze's field names in a recipients object (its external id is `external_user_id` there).
RECIPIENT_FIELDS = {EXTERNAL_ID: "external_user_id", BRAZE_ID: "braze_id", EMAIL: "email"}

# POST /users/identify, "Identifying users by email": the allowed values, of which only one
# of `identified` and `unidentified`, in order of preference.
PRIORITIES = ("identified", "unidentified", "most_recently_updated", "least_recently_updated")
DEFAULT_PRIORITIZATION = ("identified", "most_recently_updated")
PRIORITIZATION_RULE = (
    "a comma-separated list of identified, unidentified, most_recently_updated and "
    "least_recently_updated, each at most once, not both identified and unidentified"
)

# No id may hold it (rules.CUSTOMER_ID_RE and the email rule exclude control characters),
# so an index joined with it is never also an external id or another user's index.
_JOIN = "\x1f"


class NotOneUser(ValueError):
    """The fields name no user, or more than one way: the message names the fields."""


def check_prioritization(values: Sequence[str]) -> tuple[str, ...]:
    """Braze's prioritization rule, or ValueError saying it."""
    found = tuple(values)
    known = all(value in PRIORITIES for value in found)
    if not found or not known or len(set(found)) != len(found):
        raise ValueError(f"must be {PRIORITIZATION_RULE}")
    if {"identified", "unidentified"} <= set(found):
        raise ValueError(f"must be {PRIORITIZATION_RULE}")
    return found


@dataclass(frozen=True, slots=True)
class BrazeUser:
    """One Braze user, by one identifier."""

    kind: str  # one of KINDS
    id: str  # the external id, the Braze id, the address, or a user alias's alias_name
    label: str = ""  # a user alias's alias_label
    prioritization: tuple[str, ...] = ()  # with an email: which of its profiles Braze picks

    @property
    def key(self) -> tuple[str, str, str]:
        """Who this is, to tell users apart (an address in any case is one address)."""
        return (self.kind, self.id.casefold() if self.kind == EMAIL else self.id, self.label)

    @property
    def index(self) -> str:
        """One string per user for a store's index and for a hashed log reference.

        An external id is itself, as stored before the other kinds existed, so triggers
        accepted then are still found by it; the other kinds carry their name.
        """
        if self.kind == EXTERNAL_ID:
            return self.id
        return _JOIN.join(part for part in self.key if part)

    @property
    def address(self) -> str | None:
        """The email address Braze delivers to, when this user is named by it."""
        return self.id.casefold() if self.kind == EMAIL else None

    def recipient_fields(self) -> dict:
        """The identifier as a Braze recipients object carries it."""
        if self.kind == USER_ALIAS:
            return {"user_alias": {"alias_name": self.id, "alias_label": self.label}}
        fields: dict = {RECIPIENT_FIELDS[self.kind]: self.id}
        if self.kind == EMAIL:
            fields["prioritization"] = list(self.prioritization)
        return fields

    def attribute_fields(self) -> dict:
        """The identifier as a `/users/track` attributes object carries it: "one of
        `external_id`, `user_alias`, `braze_id`, `email`, or `phone` is required" (no
        prioritization there: Braze updates "the most recently updated profile")."""
        if self.kind == USER_ALIAS:
            return {"user_alias": {"alias_name": self.id, "alias_label": self.label}}
        return {self.kind: self.id}

    def describe(self) -> str:
        """For people: an external id as itself, the other kinds named."""
        if self.kind == EXTERNAL_ID:
            return self.id
        if self.kind == USER_ALIAS:
            return f"user_alias {self.label}: {self.id}"
        return f"{self.kind} {self.id}"

    def stored(self) -> str | dict:
        """The JSON a store keeps: an external id as a bare string, as before the other
        kinds existed, so a trigger's fingerprint (Idempotency-Key) is unchanged by them."""
        if self.kind == EXTERNAL_ID:
            return self.id
        found: dict = {"kind": self.kind, "id": self.id}
        if self.label:
            found["label"] = self.label
        if self.prioritization:
            found["prioritization"] = list(self.prioritization)
        return found

    @classmethod
    def from_stored(cls, value: str | Mapping) -> BrazeUser:
        if isinstance(value, str):
            return cls(EXTERNAL_ID, value)
        return cls(
            value["kind"],
            value["id"],
            value.get("label", ""),
            tuple(value.get("prioritization", ())),
        )


def named_ids(fields: Mapping[str, object]) -> list[str]:
    """Which of IDS the fields give (None and "" count as absent)."""
    return [kind for kind in IDS if fields.get(kind) not in (None, "")]


def check_one_user(fields: Mapping[str, object]) -> None:
    """At most one id, and an id or an email: NotOneUser naming the fields otherwise."""
    given = named_ids(fields)
    if len(given) > 1:
        raise NotOneUser(
            f"names the customer by {' and '.join(given)}: give at most one of "
            f"{', '.join(IDS)} (Braze takes one identifier per recipient)."
        )
    if not given and fields.get(EMAIL) in (None, ""):
        raise NotOneUser(f"needs one of {', '.join(IDS)} or {EMAIL}.")


def user_from(
    fields: Mapping[str, object], *, prioritization: Sequence[str] = DEFAULT_PRIORITIZATION
) -> BrazeUser:
    """The user the fields name (values already checked for form): their one id, else their
    email with `prioritization`. A user alias is `{"alias_name", "alias_label"}`."""
    check_one_user(fields)
    given = named_ids(fields)
    if not given:
        return BrazeUser(EMAIL, str(fields[EMAIL]), prioritization=tuple(prioritization))
    kind = given[0]
    value = fields[kind]
    if kind == USER_ALIAS:
        assert isinstance(value, Mapping)
        return BrazeUser(USER_ALIAS, str(value["alias_name"]), str(value["alias_label"]))
    return BrazeUser(kind, str(value))
