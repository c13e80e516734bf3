"""What the sandbox's APIs share: SessionM's error body, its .NET dates, JSON integer checks."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

Clock = Callable[[], datetime]
"""Returns an aware datetime; answers are computed from it at each request."""


def dotnet(moment: datetime, digits: int) -> str:
    """Format a UTC time the way SessionM's .NET serializer does, with 0 to 7 fraction digits."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}0"[:digits]
    return text + "Z"


def error(code: str, message: str) -> dict[str, Any]:
    return {"status": "error", "errors": {"code": code, "message": message}}


def is_int(value: Any) -> bool:
    """JSON booleans are Python ints; a count must not accept `true`."""
    return isinstance(value, int) and not isinstance(value, bool)
