"""Text from outside, made safe to put in a log line."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Every control character as `\\xNN`, so a newline in a path can't forge a log line."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
