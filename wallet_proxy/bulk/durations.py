"""Durations on the command line (`--fresh-for 2h`, `--send-within 90m`) and in output."""

from __future__ import annotations

import re

import click

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNITS = {"h": 3600, "m": 60, "s": 1}
DURATION_RULE = "like 90s, 45m, 2h or 1h30m"


def parse_duration(text: str) -> float | None:
    """Seconds for `2h`, `1h30m`, `45m`, `90s` or plain seconds; None if it isn't one."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    if len({unit for _, unit in parts}) != len(parts):
        return None  # the same unit twice, like 1h2h
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


class Duration(click.ParamType):
    """A duration between `low` and `high` seconds, as seconds (a float)."""

    name = "duration"

    def __init__(self, low: float, high: float):
        self.low = low
        self.high = high

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float):
            return value
        seconds = parse_duration(str(value))
        if seconds is None:
            self.fail(f"{value!r} is not a duration ({DURATION_RULE})", param, ctx)
        if not self.low <= seconds <= self.high:
            self.fail(f"must be between {spoken(self.low)} and {spoken(self.high)}", param, ctx)
        return seconds


def spoken(seconds: float) -> str:
    """`2 h 5 min`, `3 min 20 s`, `40 s`: rounded to what a person plans with."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"
