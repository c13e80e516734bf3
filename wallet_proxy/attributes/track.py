"""Braze's `POST /users/track`, for profile attributes: one request, and what its answer says.

Braze's rules (its `/users/track` and rate limits pages): a key with the `users.track`
permission; "up to 75 event objects, 75 attribute objects, and 75 purchase objects" a
request (the caller batches by WALLET_PROXY_BRAZE_TRACK_BATCH); each attributes object
names its user by one of `external_id`, `user_alias`, `braze_id` or `email`
(braze_users.py). A success is `"message": "success"` with `attributes_processed`; a
success may carry `errors`, and "any data not affected by an error in the errors array
will still be processed". Those errors' shape is not documented: one that names an object
by its `index` marks that object as not taken, any other marks every object of the
request, so nothing is remembered as written that may not be.

Every other answer is braze_rest.py's. Sending the same values again only overwrites
them, so any failed call may simply be sent again; how and when is the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..braze_rest import (
    ANSWER_TIMEOUT,
    Answer,
    BrazeOutcomeUnknown,
    BrazeRest,
    RateLimit,
    said,
)
from ..braze_users import BrazeUser

PATH = "/users/track"
SETUP_HINT = "BRAZE_REST_URL and BRAZE_TRACK_API_KEY (a key with the users.track permission)"


def attribute_object(user: BrazeUser, attributes: Mapping[str, object]) -> dict:
    """One user's attributes object: their identifier, then the attributes."""
    return {**user.attribute_fields(), **attributes}


@dataclass(frozen=True, slots=True)
class Tracked:
    """A request Braze took: its count, and Braze's words for each object it did not."""

    processed: int | None  # Braze's attributes_processed, when it says
    refused: dict[int, str] = field(default_factory=dict)  # object index -> why
    rate: RateLimit = field(default_factory=RateLimit)


class TrackClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        answer_timeout: float = ANSWER_TIMEOUT,
        pool_size: int = 4,
        clock=time.time,
    ):
        self.rest = BrazeRest(
            base_url,
            api_key,
            setup_hint=SETUP_HINT,
            answer_timeout=answer_timeout,
            pool_size=pool_size,
            clock=clock,
        )

    def close(self) -> None:
        self.rest.close()

    def track(self, objects: Sequence[dict]) -> Tracked:
        """One request of attributes objects; raises a BrazeFailure unless Braze took it."""
        return _tracked(self.rest.post(PATH, {"attributes": list(objects)}), len(objects))


def _tracked(answer: Answer, count: int) -> Tracked:
    message = answer.said("message")
    if message.lower() != "success":
        raise BrazeOutcomeUnknown(
            f"Braze answered HTTP {answer.status} without success: {message or 'no message'}",
            status=answer.status,
            rate=answer.rate,
        )
    processed = answer.document.get("attributes_processed")
    refused: dict[int, str] = {}
    errors = answer.document.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            words, index = said(error.get("type") or error.get("message")), error.get("index")
            ours = error.get("input_array") in (None, "attributes")
        else:
            words, index, ours = said(error), None, False
        if ours and isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
            refused[index] = words or "refused by Braze"
        else:  # not tied to an object: none of them is known to be written
            for each in range(count):
                refused.setdefault(each, words or "Braze reported an error")
    return Tracked(
        processed if isinstance(processed, int) and not isinstance(processed, bool) else None,
        refused,
        answer.rate,
    )
