"""Braze's `POST /users/track` stood in for: its rules for a body, and the profiles it keeps.

Braze's rules (its `/users/track`, rate limits and user attributes object pages): a body
of optional `attributes`, `events` and `purchases` arrays, "up to 75 event objects, 75
attribute objects, and 75 purchase objects" a request, more being a 400; with the
`max_objects` knob, at most that many in total across them, as contracts of Monthly
Active Users CY 24-25 have it ("up to 50 updates combined across attribute, event, or
purchase objects"). Each attributes object names its user by one of `external_id`,
`user_alias` (`alias_name` and `alias_label`), `braze_id`, `email` or `phone`. An object
naming nobody, or a user in the `reject` knob, is skipped with a non-fatal error, as
Braze does with "one invalid event object out of a long list": the answer is still 201
`success`, with `errors` naming each skipped object's `index`.

What it keeps: a profile per identifier with its attributes and when each was set. An
external id, an email or a phone gets a profile unless `_update_existing_only` is true;
a Braze id never does (Braze assigns them), a user alias only with `_update_existing_only:
false` ("When using a `user_alias`, Update Only defaults to true"). A null removes an
attribute ("To remove a profile attribute, set it to `null`"). A trigger's recipient
`attributes` update a profile that exists (Braze sets them "before the message is sent",
and sends to existing users only).
"""

from __future__ import annotations

import threading
from typing import Any

ARRAYS = ("attributes", "events", "purchases")
MAX_PER_ARRAY = 75
IDENTIFIERS = ("external_id", "braze_id", "user_alias", "email", "phone")
CREATED_BY_DEFAULT = ("external_id", "email", "phone")
# How a trigger's recipients object names the same identifiers.
RECIPIENT_NAMES = {"external_user_id": "external_id"}


def track_problem(body: Any, max_objects: int | None) -> str | None:
    """What Braze would answer 400 for, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    total = 0
    for name in ARRAYS:
        objects = body.get(name, [])
        if not isinstance(objects, list):
            return f"{name} must be an array"
        if len(objects) > MAX_PER_ARRAY:
            return f"{name}: at most {MAX_PER_ARRAY} objects a request"
        total += len(objects)
    if max_objects is not None and total > max_objects:
        return f"at most {max_objects} objects a request, combined across {', '.join(ARRAYS)}"
    return None


def user_of(entry: dict) -> tuple[str, str] | None:
    """Who an attributes object (or a trigger recipient) names: (identifier, value), an
    email in lower case and an alias as `label:name`; None when it names nobody."""
    for field, name in [*RECIPIENT_NAMES.items(), *((n, n) for n in IDENTIFIERS)]:
        value = entry.get(field)
        if name == "user_alias" and isinstance(value, dict):
            alias, label = value.get("alias_name"), value.get("alias_label")
            if isinstance(alias, str) and alias and isinstance(label, str) and label:
                return name, f"{label}:{alias}"
        elif isinstance(value, str) and value:
            return name, value.casefold() if name == "email" else value
    return None


class Profiles:
    """Every profile the stand-in was told about, by "identifier:value"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._profiles: dict[str, dict[str, Any]] = {}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                key: {"attributes": dict(p["attributes"]), "set_at": dict(p["set_at"])}
                for key, p in self._profiles.items()
            }

    def track(self, body: dict, *, reject: list[str], now: float) -> dict[str, Any]:
        """Apply a checked body's attributes objects; the 201 answer Braze gives."""
        errors = []
        processed = 0
        for index, entry in enumerate(body.get("attributes", [])):
            user = user_of(entry) if isinstance(entry, dict) else None
            if user is None:
                problem = f"one of {', '.join(IDENTIFIERS)} is required"
            elif user[1] in reject:
                problem = f"provided {user[0]} is blacklisted and disallowed"
            else:
                processed += 1
                only_existing = entry.get("_update_existing_only")
                if only_existing is None:
                    only_existing = user[0] not in CREATED_BY_DEFAULT
                self._apply(user, entry, now, create=not only_existing)
                continue
            errors.append({"type": problem, "input_array": "attributes", "index": index})
        answer: dict[str, Any] = {"message": "success", "attributes_processed": processed}
        if errors:
            answer["errors"] = errors
        return answer

    def update_existing(self, recipient: dict, attributes: dict, now: float) -> None:
        """A trigger's recipient attributes, on a profile that exists."""
        user = user_of(recipient)
        if user is not None:
            self._apply(user, attributes, now, create=False)

    def _apply(self, user: tuple[str, str], entry: dict, now: float, *, create: bool) -> None:
        key = f"{user[0]}:{user[1]}"
        with self._lock:
            profile = self._profiles.get(key)
            if profile is None:
                if not create:
                    return
                profile = self._profiles[key] = {"attributes": {}, "set_at": {}}
            for name, value in entry.items():
                if name in IDENTIFIERS or name.startswith("_"):
                    continue
                if value is None:
                    profile["attributes"].pop(name, None)
                else:
                    profile["attributes"][name] = value
                profile["set_at"][name] = now
