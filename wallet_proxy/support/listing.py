"""Which of a wallet's offers a page shows: a filter by title or id, and pages of 50.

A customer with thousands of offers made one page hundreds of thousands of pixels
tall; an agent looking for one offer types part of its title or an id instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import InvalidRequest
from ..wallet import Offer

PAGE_SIZE = 50
MAX_FILTER = 100
MAX_PAGE = 10_000
PAGE_RE = re.compile(r"^[0-9]{1,5}\Z")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Shown:
    """The listing parameters of a wallet page: `q`, `page` (live offers), `left_page`."""

    q: str
    page: int
    left_page: int


def parse(args: Mapping[str, str]) -> Shown:
    """InvalidRequest (a 400 page) for a page that is not a number or a filter too long."""
    q = " ".join(args.get("q", "").split())  # no control characters, single spaces
    if len(q) > MAX_FILTER:
        raise InvalidRequest(f"The filter must be at most {MAX_FILTER} characters.")
    return Shown(q, _page_number(args, "page"), _page_number(args, "left_page"))


def _page_number(args: Mapping[str, str], name: str) -> int:
    raw = args.get(name) or "1"
    if not PAGE_RE.match(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"{name} must be a whole number from 1 to {MAX_PAGE}.")
    return int(raw)


def matches(offer: Offer, q: str) -> bool:
    """Case-insensitive: part of the title, or of any id an agent may have been given."""
    if not q:
        return True
    wanted = q.casefold()
    fields = (offer.title, offer.user_offer_id, offer.offer_id, offer.pos_discount_id)
    return any(wanted in field.casefold() for field in fields)


@dataclass(frozen=True, slots=True)
class Paged(Generic[T]):
    items: Sequence[T]
    page: int  # from 1; past the end means the last page
    pages: int
    total: int
    first: int  # position (from 1) of the first item shown; 0 when none

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1 if self.items else 0


def page(items: Sequence[T], number: int, size: int = PAGE_SIZE) -> Paged[T]:
    pages = max(1, math.ceil(len(items) / size))
    number = min(number, pages)
    start = (number - 1) * size
    shown = items[start : start + size]
    return Paged(shown, number, pages, len(items), start + 1 if shown else 0)
