"""What a support agent needs from the pages: a lookup box everywhere, a cache state that
doesn't contradict itself, cultures, folded JSON and copy buttons, large wallets in pages
with a filter, and who on staff looked at a customer lately."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from tests.helpers import OFFER_WITH_UNKNOWN_EXPIRY, UNHURRIED
from tests.staff import (
    PASSWORD,
    STAFF,
    assert_page,
    basic,
    element,
    log_in,
    staff_env,
    token_in,
)
from wallet_proxy.attributes.written import WrittenStoreError
from wallet_proxy.cli import main
from wallet_proxy.config import ConfigError, Settings
from wallet_proxy.container import services
from wallet_proxy.errors import StoreUnavailable
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY
from wallet_proxy.support import listing
from wallet_proxy.support.history import KEEP, SAME_VISIT_SECONDS
from wallet_proxy.support.state import EXTENSION as support_state_key
from wallet_proxy.support.state import support_state

ALICE, CAROL = "/support/wallets/demo-alice", "/support/wallets/demo-carol"


@pytest.fixture
def env(env, tmp_path):
    return staff_env({**env, **UNHURRIED}, tmp_path / "data")


@pytest.fixture
def staff_client(client):
    assert log_in(client).status_code == 303
    return client


def lookup_box(page: str) -> str:
    return element(page, r'(<form class="lookup" role="search".*?</form>)')


def titles(page: str, table: str = "live-offers") -> list[str]:
    if f'<table id="{table}"' not in page:
        return []
    rows = element(page, rf'<table id="{table}"(.*?)</table>')
    return [html.unescape(t) for t in re.findall(r'<span class="title">([^<]*)</span>', rows)]


# A lookup box on every page


@pytest.mark.parametrize(
    ("path", "status", "shown"),
    [
        (ALICE, 200, "demo-alice"),
        ("/support/wallets/nobody", 404, "nobody"),
        ("/support/?user_id=bad id!", 400, "bad id!"),
        ("/support/wallets/demo-alice?page=x", 400, "demo-alice"),
    ],
)
def test_every_page_has_a_lookup_box_holding_the_id_looked_up(staff_client, path, status, shown):
    response = staff_client.get(path)
    assert response.status_code == status
    box = lookup_box(response.text)
    assert 'action="/support/"' in box and '<label for="lookup-id">' in box
    assert f'name="user_id" value="{html.escape(shown)}"' in box
    if status != 200:
        assert f"You looked up <code>{html.escape(shown)}</code>" in response.text


def test_the_error_page_box_looks_up_again(staff_client):
    page = staff_client.get("/support/wallets/nobody?culture=es-ES").text
    assert "You looked up <code>nobody</code> in <code>es-ES</code>." in page
    assert "<option selected>es-ES</option>" in lookup_box(page)
    again = staff_client.get("/support/?user_id=demo-alice&culture=es-ES")
    assert again.location == "/support/wallets/demo-alice?culture=es-ES"


def test_the_lookup_page_has_one_form_and_no_box(staff_client, client):
    page = staff_client.get("/support/").text
    assert 'class="lookup"' not in page and '<label for="user_id">' in page
    assert 'class="lookup"' not in client.get("/support/login").text


# The cache state agrees with itself


def fresh_until(page: str) -> str:
    return element(page, r'<time id="fresh-until" datetime="([^"]+)"')


def test_badge_and_text_both_follow_the_entrys_fresh_until(app, staff_client, clock):
    # Lifetimes vary by up to 10 %: this entry is fresh for 57 s of the 60 s TTL.
    services(app).wallet_service.rng = lambda: 0.5
    first = staff_client.get(ALICE).text
    fetched = datetime.fromisoformat(element(first, r'<time id="fetched-at" datetime="([^"]+)"'))
    until = datetime.fromisoformat(fresh_until(first))
    assert (until - fetched).total_seconds() == 57
    assert "(57 s after it was fetched)" in first

    clock.advance(seconds=56)
    page = staff_client.get(ALICE).text
    state = element(page, r'<dd id="cache-state">(.*?)</dd>')
    assert 'badge fresh">fresh<' in state and "age 56 s" in state
    assert "Fresh in this service's cache until" in page

    clock.advance(seconds=1)
    page = staff_client.get(ALICE).text
    state = element(page, r'<dd id="cache-state">(.*?)</dd>')
    assert 'badge stale">stale<' in state and "age 57 s" in state
    text = element(page, r'<p id="cache-text">(.*?)</p>')
    assert "Fresh until" in text and fresh_until(page) == fresh_until(first)
    assert "older than" not in page  # the old text said 60 s beside a 57 s stale badge


def test_the_page_says_how_long_braze_may_keep_showing_this_copy(staff_client, clock):
    """Braze caches what it gets for 5 minutes by default, 4 hours at most: a redeemed offer
    may show in messages until then, whatever this service's cache does."""
    clock.advance(minutes=10)
    page = staff_client.get(ALICE).text
    text = re.sub(r"\s+", " ", element(page, r'<p id="braze-cache-text">(.*?)</p>'))
    times = re.findall(r'<time[^>]* datetime="([^"]+)"', text)
    assert [datetime.fromisoformat(moment) - clock() for moment in times] == [
        timedelta(minutes=5),
        timedelta(hours=4),
    ]
    assert "offers redeemed or expired since included" in text
    assert "<code>:no_cache</code> asks again at every render" in text


# Cultures


def test_culture_switcher_lists_the_configured_cultures(make_app):
    client = make_app(WALLET_PROXY_CULTURES="es-ES, fr-FR").test_client()
    log_in(client)
    page = client.get(f"{ALICE}?q=coffee").text
    switcher = element(page, r'<nav class="cultures" aria-label="Culture">(.*?)</nav>')
    links = re.findall(r'<a href="([^"]+)"( aria-current="page")?>([^<]+)</a>', switcher)
    assert [(text, bool(current)) for _, current, text in links] == [
        ("en-US", True),
        ("es-ES", False),
        ("fr-FR", False),
    ]
    spanish = html.unescape(links[1][0])
    assert spanish == "/support/wallets/demo-alice?culture=es-ES&q=coffee"
    assert titles(client.get(spanish).text) == ["10 % de descuento en tu próximo café"]
    options = re.findall(r"<option[^>]*>([^<]+)</option>", lookup_box(page))
    assert options == ["en-US", "es-ES", "fr-FR"]


def test_cultures_setting(env):
    default = Settings.from_env(env)
    assert default.cultures == ("en-US",)
    listed = Settings.from_env(
        {**env, "WALLET_PROXY_DEFAULT_CULTURE": "es-ES", "WALLET_PROXY_CULTURES": "en-US,es-ES"}
    )
    assert listed.cultures == ("es-ES", "en-US")
    with pytest.raises(ConfigError, match=r"^WALLET_PROXY_CULTURES: must be cultures"):
        Settings.from_env({**env, "WALLET_PROXY_CULTURES": "en-US,english"})


def test_cultures_are_one_spelling_in_settings_pages_and_switch(env, sandbox, make_app):
    """`es_ES` (Braze's locale), `ES-es` and `es-es` are es-ES wherever a culture is read."""
    settings = Settings.from_env(
        {**env, "WALLET_PROXY_DEFAULT_CULTURE": "EN_us", "WALLET_PROXY_CULTURES": "es_ES, ES-es"}
    )
    assert (settings.default_culture, settings.cultures) == ("en-US", ("en-US", "es-ES"))
    client = make_app(WALLET_PROXY_CULTURES="es_ES").test_client()
    log_in(client)
    assert client.get("/support/?user_id=demo-alice&culture=ES_es").location == (
        f"{ALICE}?culture=es-ES"
    )
    page = client.get(f"{ALICE}?culture=es-es").text
    switcher = element(page, r'<nav class="cultures" aria-label="Culture">(.*?)</nav>')
    assert re.findall(r'aria-current="page">([^<]+)</a>', switcher) == ["es-ES"]
    assert re.findall(r"<option selected>([^<]+)</option>", lookup_box(page)) == ["es-ES"]
    assert "/v1/wallets/{{${user_id}}}?culture=es-ES :basic_auth" in html.unescape(page)
    assert titles(page)[0] == "10 % de descuento en tu próximo café"
    # An error page's lookup box too: the culture typed, in its one spelling.
    missing = client.get("/support/wallets/nobody?culture=es_es").text
    assert re.findall(r"<option selected>([^<]+)</option>", lookup_box(missing)) == ["es-ES"]
    assert sandbox.stats()["calls_by_culture"] == {"es-ES": 2}


def test_an_offer_without_an_expiry_field_we_know_is_marked(staff_client, sandbox):
    """Served as never expiring for want of a field we read, which may be wrong: the page
    says so beside its expiry. SessionM's own "never" (`expiration_date: null`) is not."""
    assert "no-expiry-field" not in staff_client.get(ALICE).text
    sandbox.configure(extra_offers=[OFFER_WITH_UNKNOWN_EXPIRY])
    page = staff_client.get("/support/wallets/demo-bob").text
    rows = re.findall(
        r"<tr>(.*?)</tr>", element(page, r'<table id="live-offers"(.*?)</table>'), re.S
    )
    (row,) = [row for row in rows if "Odd tenant" in html.unescape(row)]
    marker = element(row, r'<span class="no-expiry-field">(.*?)</span>')
    assert "none of the expiry fields this service reads" in marker
    assert "(expires_at, expiration_date, redemption_end_date)" in marker
    assert "wallet-proxy check-config --probe --user demo-bob" in re.sub(
        r"<[^>]+>|\s+", " ", marker
    )
    assert "never expires" in row

    page = staff_client.get(ALICE).text
    times = re.findall(r'<time[^>]* datetime="([^"]+)"', page)
    assert len(times) >= 6  # fetched, fresh until, 3 expiries, the history's lookup
    for value in times:
        assert value.endswith("Z") and datetime.fromisoformat(value)


# The JSON and the copy buttons


def test_the_page_shows_the_attributes_last_written_to_braze_and_when(
    env, staff_client, sandbox, tmp_path
):
    bob = "/support/wallets/demo-bob"
    before = staff_client.get(bob).text
    assert "has written no loyalty attributes to a Braze profile" in before
    assert element(
        before, r"<td><code>sessionm_available_points</code></td>.*?<td>(.*?)</td>"
    ) == ("—")
    export = tmp_path / "export.csv"
    export.write_text("external_id,user_id\next-bob,demo-bob\n")
    sync_env = {
        **env,
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_TRACK_API_KEY": DEMO_BRAZE_API_KEY,
        "WALLET_PROXY_BRAZE_TRACK_RATE": "0",
    }
    synced = CliRunner().invoke(main, ["attributes", "sync", str(export)], env=sync_env)
    assert synced.exit_code == 0, synced.output

    page = staff_client.get(bob).text
    assert "Last written to the profile <code>ext-bob</code> at" in page
    assert "by the attributes sync" in page
    written_at = datetime.fromisoformat(element(page, r'<time id="written-at" datetime="([^"]+)"'))
    assert abs((datetime.now(written_at.tzinfo) - written_at).total_seconds()) < 60
    table = element(page, r'<table id="in-braze-attributes">(.*?)</table>')
    rows = re.findall(
        r"<td><code>(\w+)</code></td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", table, re.S
    )
    cells = {name: (was, now) for name, was, now in rows}
    assert cells["sessionm_available_points"] == ("<code>40</code>", "<code>40</code>")
    assert cells["sessionm_offer_count"] == ("<code>0</code>", "<code>0</code>")
    assert cells["sessionm_next_offer_expires_at"] == ("<code>null</code>", "<code>null</code>")
    assert "changed" not in table

    sandbox.configure(extra_offers=[{**OFFER_WITH_UNKNOWN_EXPIRY, "is_redeemable": True}])
    staff_client.post(f"{bob}/refresh", data={"csrf_token": token_in(page), "culture": "en-US"})
    later = element(staff_client.get(bob).text, r'<table id="in-braze-attributes">(.*?)</table>')
    assert re.search(r"<code>1</code> <span class=\"badge stale\">changed</span>", later)


def test_the_page_stands_when_what_was_written_cant_be_read(app, staff_client):
    class Failing:
        def latest_for(self, user_id):
            raise WrittenStoreError("database is locked")

    state = app.extensions[support_state_key]
    app.extensions[support_state_key] = dataclasses.replace(state, written=Failing())
    page = staff_client.get("/support/wallets/demo-bob")
    assert page.status_code == 200
    assert "What was written to Braze can't be read right now" in page.text
    table = element(page.text, r'<table id="in-braze-attributes">(.*?)</table>')
    assert "<code>40</code>" in table  # what a write would set is still shown


def test_json_is_indented_and_folded(staff_client, auth):
    page = staff_client.get(ALICE).text
    panel = element(page, r'(<details class="json">.*?</details>)')
    assert '<details class="json">' in panel  # not `open`
    shown = element(panel, r'<pre id="braze-json"[^>]*>(.*?)</pre>')
    assert shown.startswith('{\n  "user_id": "demo-alice",')


def test_a_large_answer_is_previewed_and_linked_whole(staff_client, auth):
    page = staff_client.get(CAROL).text
    preview = json.loads(element(page, r'<pre id="braze-json"[^>]*>(.*?)</pre>'))
    assert preview["offer_count"] == 2500 and len(preview["offers"]) == 3
    assert "with its offers cut to the first 3" in page
    exact = staff_client.get(element(page, r'<a id="exact-json" href="([^"]+)"'))
    api = staff_client.get("/v1/wallets/demo-carol", headers=auth)
    assert exact.data == api.data and len(json.loads(exact.data)["offers"]) == 2500


def test_ids_have_copy_buttons_that_only_the_script_reveals(staff_client):
    page = staff_client.get(ALICE).text
    buttons = re.findall(
        r'<button type="button" class="copy" data-copy="([^"]*)"[^>]*hidden>', page
    )
    for value in (
        "demo-alice",
        "a11ce000-0000-4000-8000-000000000002",
        "a11ce000-0000-4000-9000-000000000002",
        "COFFEE-10",
    ):
        assert value in buttons
    mallory = staff_client.get("/support/wallets/demo-mallory").text
    assert 'data-copy="&lt;img src=x onerror=alert(2)&gt;"' in mallory


# Large wallets: pages and a filter


def test_a_large_wallet_comes_fifty_offers_a_page(staff_client):
    response = staff_client.get(CAROL)
    page = response.text
    assert len(titles(page)) == 50
    assert "Showing 1 to 50 of 2,500." in page
    assert len(response.data) < 150_000  # it was 3.3 MB, 382,564 px tall
    pager = element(
        page, r'<nav class="pager" aria-label="Pages of offers Braze gets">(.*?)</nav>'
    )
    assert "Page 1 of 50" in pager and "Previous" not in pager
    following = html.unescape(element(pager, r'<a href="([^"]+)" rel="next"'))
    assert following == "/support/wallets/demo-carol?culture=en-US&page=2#live-title"
    second = staff_client.get(following).text
    assert "Showing 51 to 100 of 2,500." in second and titles(second)[0] != titles(page)[0]
    last = staff_client.get(f"{CAROL}?page=999").text  # past the end: the last page
    assert "Showing 2,451 to 2,500 of 2,500." in last and 'rel="next"' not in last


def test_the_filter_finds_offers_by_title_or_id(staff_client):
    by_title = staff_client.get(f"{CAROL}?q=offer+1234").text
    assert titles(by_title) == ["Offer 1234"]
    assert "1 matching “offer 1234”." in by_title
    by_id = staff_client.get(f"{CAROL}?q=c0000000-0000-4000-9000-000000000007").text
    assert titles(by_id) == ["Offer 7"]
    by_discount = staff_client.get(f"{CAROL}?q=gen-002").text
    assert len(titles(by_discount)) == 10  # GEN-0020 .. GEN-0029
    nothing = staff_client.get(f"{CAROL}?q=espresso").text
    assert "No offer Braze gets matches “espresso”." in nothing
    left_out = staff_client.get(f"{ALICE}?q=pastry").text
    assert titles(left_out, "left-out") == ["Free pastry with any drink"]
    assert titles(left_out) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page must be a whole number"),
        ("page=abc", "page must be a whole number"),
        ("left_page=-1", "left_page must be a whole number"),
        ("q=" + "x" * 101, "at most 100 characters"),
    ],
)
def test_bad_listing_parameters_are_a_400_page(staff_client, query, message):
    response = staff_client.get(f"{CAROL}?{query}")
    assert_page(response, 400)
    assert message in response.text


def test_pages_of_a_list():
    items = list(range(120))
    first = listing.page(items, 1)
    assert (first.items, first.pages, first.first, first.last) == (items[:50], 3, 1, 50)
    last = listing.page(items, 7)
    assert (last.page, last.first, last.last, len(last.items)) == (3, 101, 120, 20)
    empty = listing.page([], 1)
    assert (empty.pages, empty.first, empty.last) == (1, 0, 0)
    assert listing.parse({"q": "  Free \t refill\n "}).q == "Free refill"


# Who on staff looked lately


def history(page: str) -> list[str]:
    found = element(page, r'<details class="history" id="history">(.*?)</details>')
    return [
        " ".join(re.sub(r"<[^>]+>", "", item).split())
        for item in re.findall(r"<li>(.*?)</li>", found, re.S)
    ]


def test_history_records_lookups_and_refreshes(staff_client, clock):
    first = staff_client.get(ALICE).text
    [entry] = history(first)
    assert entry.endswith(f"{STAFF} looked it up (en-US)")
    staff_client.get(f"{ALICE}?page=1&q=coffee")  # the same visit: not another lookup
    token = token_in(first)
    staff_client.post(f"{ALICE}/refresh", data={"csrf_token": token, "culture": "es-ES"})
    page = staff_client.get(f"{ALICE}?culture=es-ES").text
    assert [e.split(" UTC ")[1] for e in history(page)] == [
        f"{STAFF} refreshed it from SessionM (es-ES)",
        f"{STAFF} looked it up (en-US)",
    ]
    clock.advance(seconds=SAME_VISIT_SECONDS)
    assert len(history(staff_client.get(ALICE).text)) == 3
    assert history(staff_client.get("/support/wallets/demo-bob").text)[0].endswith(
        f"{STAFF} looked it up (en-US)"
    )


def test_history_keeps_the_last_twenty_for_seven_days(staff_client, clock):
    for _ in range(KEEP + 5):
        staff_client.get(ALICE)
        clock.advance(seconds=SAME_VISIT_SECONDS)
    page = staff_client.get(ALICE).text
    assert len(history(page)) == KEEP
    assert f"{KEEP} in the last 7 days" in page
    clock.advance(days=7, seconds=1)
    later = staff_client.get(ALICE, headers=basic(STAFF, PASSWORD))  # the login has ended
    assert len(history(later.text)) == 1  # only this lookup


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_history_is_shared_by_every_worker(clock, store, request, make_app):
    settings = {}
    if store == "redis":
        settings["WALLET_PROXY_REDIS_URL"] = request.getfixturevalue("redis_url")
    first, second = make_app(**settings), make_app(**settings)
    first.test_client().get(ALICE, headers=basic(STAFF, PASSWORD))
    clock.advance(seconds=SAME_VISIT_SECONDS)
    page = second.test_client().get(ALICE, headers=basic(STAFF, PASSWORD)).text
    assert len(history(page)) == 2


def test_the_page_works_without_its_history(make_app, monkeypatch):
    """The history is a nicety: a store that fails it takes only the history away."""
    app = make_app()

    def unavailable(*args, **kwargs):
        raise StoreUnavailable()

    monkeypatch.setattr(support_state(app).staff_history.store, "recent", unavailable)
    response = app.test_client().get(ALICE, headers=basic(STAFF, PASSWORD))
    assert response.status_code == 200
    assert "Staff activity: unavailable right now" in response.text
    assert 'id="available-points">1,250<' in response.text


def test_a_login_that_cannot_be_counted_is_refused(make_app):
    """Failed logins are counted in the shared store: without it nobody is let in (503),
    rather than guesses let through uncounted."""
    app = make_app(WALLET_PROXY_REDIS_URL="redis://127.0.0.1:9/0")
    assert_page(app.test_client().get(ALICE, headers=basic(STAFF, PASSWORD)), 503)
