"""The knobs that make the sandbox misbehave: their defaults and the rules for setting them."""

from typing import Any

from .wire import is_int

DEFAULT_KNOBS: dict[str, Any] = {
    "latency": 0.0,
    "latency_spread": 0.0,  # each call waits latency + a random share of this more
    "rate_limit": None,  # calls accepted in any sliding second; more get 429 (SessionM's own)
    "retry_after": 1,  # the Retry-After of every 429, in seconds; null: none
    "error_rate": 0.0,
    "status": None,
    "hang": False,
    "trickle": 0.0,
    "garbage": False,
    "huge": False,
    "trickle_headers": 0.0,
    "deep": False,
    "generated_offers": 3,
    "offer_padding": 0,
    "extra_offers": [],
}
_KNOB_LIMIT_SECONDS = 3600.0
MAX_GENERATED_OFFERS = 100_000
MAX_OFFER_PADDING = 1_000_000
MAX_EXTRA_OFFERS = 100


def check_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown or ill-typed knobs: a typo must not leave the sandbox well-behaved."""
    unknown = sorted(set(knobs) - set(DEFAULT_KNOBS))
    if unknown:
        raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
    checked = {}
    for name, value in knobs.items():
        if isinstance(DEFAULT_KNOBS[name], bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
        elif name == "status":
            if value is not None and not (is_int(value) and 100 <= value <= 599):
                raise ValueError("status must be an HTTP status (100-599) or null")
        elif name == "retry_after":
            if value is not None and not (is_int(value) and 0 <= value <= 3600):
                raise ValueError("retry_after must be whole seconds (0-3600) or null")
        elif name == "rate_limit":
            if value is not None and not (is_int(value) and 1 <= value <= 100_000):
                raise ValueError("rate_limit must be calls per second (1-100000) or null")
        elif name == "generated_offers":
            if not (is_int(value) and 0 <= value <= MAX_GENERATED_OFFERS):
                raise ValueError(
                    f"generated_offers must be a whole number 0-{MAX_GENERATED_OFFERS}"
                )
        elif name == "offer_padding":
            if not (is_int(value) and 0 <= value <= MAX_OFFER_PADDING):
                raise ValueError(f"offer_padding must be a whole number 0-{MAX_OFFER_PADDING}")
        elif name == "extra_offers":
            if not (
                isinstance(value, list)
                and len(value) <= MAX_EXTRA_OFFERS
                and all(isinstance(offer, dict) for offer in value)
            ):
                raise ValueError(
                    f"extra_offers must be a list of at most {MAX_EXTRA_OFFERS} objects"
                )
            value = list(value)
        else:
            upper = 1.0 if name == "error_rate" else _KNOB_LIMIT_SECONDS
            if not (isinstance(value, int | float) and not isinstance(value, bool)):
                raise ValueError(f"{name} must be a number")
            if not 0 <= value <= upper:
                raise ValueError(f"{name} must be between 0 and {upper:g}")
            value = float(value)
        checked[name] = value
    return checked
