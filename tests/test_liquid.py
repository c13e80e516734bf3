"""The Braze snippets of the docs, rendered as Braze would against real answers of the service.

The snippets are read from README.md and docs/braze.md, so the documentation cannot drift
from what is tested. python-liquid plays Braze's Liquid; the two Braze-only tags
(`connected_content` and `abort_message`), Braze's cache of Connected Content answers and
the `${attribute}` syntax are emulated below, as Braze documents them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import pytest
import requests
from liquid import BoundTemplate, Environment, Node, RenderContext, Tag, Token, TokenStream
from liquid.exceptions import LiquidSyntaxError
from liquid.token import TOKEN_EXPRESSION, TOKEN_LPAREN, TOKEN_RPAREN, TOKEN_STRING, TOKEN_TAG

from tests.helpers import API_KEY, wait_until

ROOT = Path(__file__).resolve().parents[1]
# The README shows one snippet; docs/braze.md shows them all (the README's one too).
DOCS = (ROOT / "README.md", ROOT / "docs" / "braze.md")
SNIPPET = re.compile(
    r"^<!-- liquid-test: (?P<name>\S+) -->\n```liquid\n(?P<source>.*?)^```$", re.M | re.S
)
FOUND = [(doc, m["name"], m["source"]) for doc in DOCS for m in SNIPPET.finditer(doc.read_text())]
SNIPPETS = {name: source for _doc, name, source in FOUND}

PLACEHOLDER_HOST = "https://wallet-proxy.example.com"

# `:name value`, where a value is a JSON object (for :headers) or one word; :retry has none.
OPTION = re.compile(r":(?P<name>\w+)(?:\s+(?P<value>\{.*?\}|[^:\s]\S*))?\s*(?=:|$)", re.S)
KNOWN_OPTIONS = {"basic_auth", "headers", "save", "retry", "cache_max_age", "no_cache"}
BRAZE_ATTRIBUTE = re.compile(r"\$\{(\w+)\}")
# Braze's cache of GET answers, by URL (caching_responses.md): "If a cache time is not
# specified, the default cache time is five minutes"; :cache_max_age sets 5 minutes to
# 4 hours; a body over 1 MB "will not cache"; :no_cache turns it off.
BRAZE_CACHE_AGE = timedelta(minutes=5)
BRAZE_CACHE_AGES = (timedelta(minutes=5), timedelta(hours=4))
BRAZE_CACHE_MAX_BODY = 1024 * 1024


class MessageAborted(Exception):
    """Raised by `abort_message`: Braze then sends nothing to this recipient."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ConnectedContentNode(Node):
    def __init__(self, token: Token, url: BoundTemplate, options: dict[str, str | None]):
        super().__init__(token)
        self.url = url
        self.options = options

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        """GET the URL as Braze does, or take its cached answer, and save it the way Braze
        documents it."""
        braze: Braze = context.env
        url = StringIO()
        self.url.render_with_context(context, url)
        response = braze.cached(url.getvalue(), self.cache_age())
        if response is None:
            response = self.get(braze, url.getvalue())
            braze.keep(url.getvalue(), response, self.cache_age())
        try:
            saved = response.json()
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            saved = response.text
        elif 200 <= response.status_code < 300:
            saved["__http_status_code__"] = response.status_code
        context.assign(self.options["save"], saved)
        return 0

    def cache_age(self) -> timedelta | None:
        """How long Braze keeps this call's answer; None: not at all (`:no_cache`)."""
        if "no_cache" in self.options:
            return None
        given = self.options.get("cache_max_age")
        if given is None:
            return BRAZE_CACHE_AGE
        low, high = BRAZE_CACHE_AGES
        return min(max(timedelta(seconds=int(given)), low), high)

    def get(self, braze: Braze, url: str) -> requests.Response:
        headers = {
            "Content-Type": "application/json",
            "Accept": "*/*",
            "User-Agent": "Braze Sender 5f0c6b0e",
        }
        if self.options.get("headers"):
            given = self.options["headers"].replace("YOUR-API-KEY", braze.api_key)
            headers.update(json.loads(given))
        credential = self.options.get("basic_auth")
        response = requests.get(
            url.replace(PLACEHOLDER_HOST, braze.server_url),
            headers=headers,
            auth=braze.credentials[credential] if credential else None,
            timeout=2,  # Braze drops answers slower than 2 s
            allow_redirects=False,
        )
        braze.requested.append(response.request)
        return response


class ConnectedContentTag(Tag):
    """`{% connected_content URL :option value ... %}`; this emulation needs `:save`."""

    name = "connected_content"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        token = stream.eat(TOKEN_TAG)
        url, _, rest = stream.expect(TOKEN_EXPRESSION).value.partition(" ")
        options = {match["name"]: match["value"] for match in OPTION.finditer(rest)}
        if OPTION.sub("", rest).strip() or not options.keys() <= KNOWN_OPTIONS:
            raise LiquidSyntaxError(f"options this emulation can't read: {rest}", token=token)
        return ConnectedContentNode(token, self.env.from_string(url), options)


class AbortMessageNode(Node):
    def __init__(self, token: Token, reason: str):
        super().__init__(token)
        self.reason = reason

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        raise MessageAborted(self.reason)


class AbortMessageTag(Tag):
    """`{% abort_message('reason') %}`."""

    name = "abort_message"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        token = stream.eat(TOKEN_TAG)
        tokens = stream.into_inner(tag=token, eat=False)
        tokens.eat(TOKEN_LPAREN)
        reason = tokens.eat(TOKEN_STRING).value
        tokens.eat(TOKEN_RPAREN)
        tokens.expect_eos()
        return AbortMessageNode(token, reason)


@dataclass(frozen=True)
class Message:
    """What Braze would send one recipient: the text, or nothing and the abort reason."""

    text: str = ""
    aborted: str | None = None


class Braze(Environment):
    """Liquid plus the Braze parts the snippets use, calling `server_url` with `api_key`;
    its cache ages by `clock` (the service's, so one move of the clock ages both caches)."""

    def __init__(self, server_url: str, api_key: str, clock: Callable[[], datetime]):
        super().__init__()
        self.server_url = server_url
        self.api_key = api_key
        self.clock = clock
        self.credentials = {"wallet_proxy": ("braze", api_key)}
        self.requested: list[requests.PreparedRequest] = []
        self._cache: dict[str, tuple[datetime, requests.Response]] = {}
        self.add_tag(ConnectedContentTag)
        self.add_tag(AbortMessageTag)

    def cached(self, url: str, age: timedelta | None) -> requests.Response | None:
        kept = self._cache.get(url)
        if age is None or kept is None or self.clock() - kept[0] >= age:
            return None
        return kept[1]

    def keep(self, url: str, response: requests.Response, age: timedelta | None) -> None:
        """Only 2xx answers: whether Braze caches others is not documented, so no snippet
        may count on it either way."""
        if age is not None and response.ok and len(response.content) <= BRAZE_CACHE_MAX_BODY:
            self._cache[url] = (self.clock(), response)

    def send(self, snippet: str, user_id: str) -> Message:
        """Render for one recipient; the blank lines the tag lines leave around it don't count."""
        source = BRAZE_ATTRIBUTE.sub(r"braze.\1", SNIPPETS[snippet])
        try:
            text = self.from_string(source).render(braze={"user_id": user_id})
        except MessageAborted as abort:
            return Message(aborted=abort.reason)
        return Message(text.strip())


@pytest.fixture
def braze(live_server, clock) -> Braze:
    return Braze(live_server.url, API_KEY, clock)


def test_the_docs_mark_the_snippets_these_tests_render():
    """A renamed or unmarked snippet must fail here, not silently go untested."""
    assert set(SNIPPETS) == {
        "points-and-offers",
        "first-offer-es",
        "bearer-header",
        "redeemed-must-not-show",
    }
    assert sum(doc.read_text().count("<!-- liquid-test:") for doc in DOCS) == len(FOUND)
    # A snippet shown in two places is the same snippet in both.
    assert all(source == SNIPPETS[name] for _doc, name, source in FOUND)
    assert {name for doc, name, _ in FOUND if doc.name == "README.md"} == {"points-and-offers"}


@pytest.mark.parametrize(
    "snippet", ["points-and-offers", "first-offer-es", "bearer-header", "redeemed-must-not-show"]
)
def test_the_url_carries_the_user_id_in_its_path(braze, snippet):
    """Braze caches by URL: without the user in it, one customer would see another's wallet."""
    braze.send(snippet, "demo-alice")
    braze.send(snippet, "demo-bob")
    paths = [urlsplit(request.url).path for request in braze.requested]
    assert paths == ["/v1/wallets/demo-alice", "/v1/wallets/demo-bob"]


def test_points_and_live_offers_soonest_expiring_first(braze):
    """Alice's expired and not-redeemable offers stay out; the never-expiring one comes last."""
    assert braze.send("points-and-offers", "demo-alice") == Message(
        "Hi! You have 1250 points.\n"
        "Your 3 offers:\n"
        "- 10% off your next coffee (ends in 3 days)\n"
        "- Double points on Saturdays (ends in 30 days)\n"
        "- Free refill, always"
    )


def test_points_without_offers(braze):
    assert braze.send("points-and-offers", "demo-bob") == Message(
        "Hi! You have 40 points.\nNo offers right now: keep collecting points!"
    )


def test_unknown_user_aborts_the_message(braze):
    """Our 404 is a JSON object without `__http_status_code__`, so the snippet aborts."""
    assert braze.send("points-and-offers", "demo-nobody") == Message(aborted="no wallet")


def test_first_offer_in_spanish(braze):
    """limit=1 leaves only the soonest-expiring live offer, in the culture asked for."""
    assert braze.send("first-offer-es", "demo-alice") == Message(
        "10 % de descuento en tu próximo café: "
        "Muestra esta oferta en caja para ahorrar en cualquier café."
    )


def test_first_offer_aborts_without_offers(braze):
    assert braze.send("first-offer-es", "demo-bob") == Message(aborted="no offer")


def test_bearer_header(braze):
    assert braze.send("bearer-header", "demo-alice") == Message("1250 of 4000 points available.")


def test_bearer_header_with_a_wrong_key_aborts(live_server, clock):
    """Our 401 is not 2xx, so Braze gives the snippet no `__http_status_code__`."""
    braze = Braze(live_server.url, "not-a-key", clock)
    assert braze.send("bearer-header", "demo-alice") == Message(aborted="no wallet")


# --- Braze's cache: how long a redeemed offer can still show ---------------------------


def gift(now: datetime) -> dict:
    """An offer SessionM lists until it is redeemed (for the sandbox's `extra_offers` knob),
    ending in 10 days."""
    return {
        "user_offer_id": "9f000000-0000-4000-8000-000000000001",
        "offer_id": "9f000000-0000-4000-9000-000000000001",
        "offer_type": "manual_fulfillment",
        "title": "Welcome gift",
        "expiration_date": (now + timedelta(days=10)).isoformat(),
    }


def test_braze_keeps_showing_a_redeemed_offer_for_its_cache_age(braze, sandbox, clock):
    """The answer Braze got stays in its cache for 5 minutes (by default): an offer redeemed
    meanwhile still shows, whatever the service's own cache does."""
    sandbox.configure(extra_offers=[gift(clock())])
    assert "- Welcome gift (ends in 10 days)" in braze.send("points-and-offers", "demo-bob").text
    sandbox.configure(extra_offers=[])  # redeemed: SessionM no longer lists it
    clock.advance(minutes=4, seconds=59)
    assert "- Welcome gift" in braze.send("points-and-offers", "demo-bob").text
    assert len(braze.requested) == 1  # from Braze's cache: the service was not asked
    clock.advance(seconds=1)
    braze.send("points-and-offers", "demo-bob")
    assert len(braze.requested) == 2  # past Braze's cache age, it asks again


def test_without_braze_cache_a_redeemed_offer_goes_with_the_services_copy(braze, sandbox, clock):
    """`:no_cache`: every render asks the service; its copy is fresh for
    WALLET_PROXY_CACHE_TTL (60 s), then stale, and a stale copy is skipped, not shown."""
    sandbox.configure(extra_offers=[gift(clock())])
    assert braze.send("redeemed-must-not-show", "demo-bob") == Message(
        "Your offers:\n- Welcome gift"
    )
    sandbox.configure(extra_offers=[])  # redeemed
    clock.advance(seconds=50)  # within the service's freshness (60 s, up to 10 % less)
    assert "Welcome gift" in braze.send("redeemed-must-not-show", "demo-bob").text
    clock.advance(seconds=11)
    assert braze.send("redeemed-must-not-show", "demo-bob") == Message(aborted="wallet not fresh")
    wait_until(lambda: sandbox.stats()["calls"] == 2, timeout=5)  # the refresh it started
    assert braze.send("redeemed-must-not-show", "demo-bob") == Message("No offers right now.")
    assert len(braze.requested) == 4
