"""The support pages in a real headless Chromium, against the app on a real HTTP server.

The app runs on the threaded LiveServer with the SessionM sandbox behind it (which also
serves the offers' logos, listed as the one image host) and a clock the test moves by
hand, so "Refresh changes the fetch time" is exact. Nothing is faked in the browser:
every request goes to the app or the sandbox, and each test checks that the page's
Content-Security-Policy blocked nothing it needs.

Screenshots of each page at desktop and phone (390 px) widths go to tests/artifacts/;
docs/support-page.png is `support-wallet-desktop.png` from this run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright
from werkzeug.security import generate_password_hash

from tests.helpers import API_KEY, UNHURRIED

pytestmark = pytest.mark.browser

STAFF, PASSWORD = "agent", "correct horse battery"
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP, PHONE = {"width": 1200, "height": 900}, {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def env(env, sandbox, tmp_path):
    return {
        **env,
        "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{generate_password_hash(PASSWORD)}",
        "WALLET_PROXY_SECRET_KEY": "browser-test-secret-key-0123456789",
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
        "WALLET_PROXY_IMAGE_HOSTS": sandbox.url,
        "WALLET_PROXY_CULTURES": "en-US,es-ES",
        **UNHURRIED,
    }


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run `make test` (it installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url,
        viewport=DESKTOP,
        locale="en-US",
        timezone_id="America/New_York",
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    context.set_default_timeout(15_000)  # demo-carol on a loaded machine takes seconds
    yield context
    context.close()


@pytest.fixture
def page(context, live_server, sandbox):
    page = context.new_page()
    page.dialogs = []
    page.problems = []  # CSP violations, script errors, requests leaving our two servers
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda message: _console_problem(page, message))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "request",
        lambda request: (
            request.url.startswith((live_server.url, sandbox.url, "data:"))
            or page.problems.append(f"request to {request.url}")
        ),
    )
    yield page
    assert page.dialogs == []
    assert page.problems == []


def _console_problem(page: Page, message) -> None:
    """Errors in the console, except an error page's own status (an expected 404)."""
    own_status = message.location.get("url") == page.url and message.text.startswith(
        "Failed to load resource: the server responded with a status of"
    )
    if message.type == "error" and not own_status:
        page.problems.append(message.text)


def log_in(page: Page) -> None:
    page.goto("/support/")
    expect(page).to_have_url("/support/login?next=/support/")
    page.get_by_label("Name").fill(STAFF)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Look up a customer")).to_be_visible()


def look_up(page: Page, user_id: str, culture: str = "en-US") -> None:
    page.goto("/support/")
    page.get_by_label("SessionM user id").fill(user_id)
    page.get_by_label("Culture", exact=True).select_option(culture)
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("heading", name=f"Wallet of {user_id}")).to_be_visible()


def screenshots(page: Page, name: str) -> None:
    """`name`-desktop.png and `name`-phone.png, the phone one checked for sideways scrolling."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=ARTIFACTS / f"{name}-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=ARTIFACTS / f"{name}-phone.png", full_page=True)
    page.set_viewport_size(DESKTOP)


def test_agent_sees_alice_and_refreshes_her_wallet(page, context, live_server, sandbox, clock):
    log_in(page)
    look_up(page, "demo-alice")

    expect(page.locator("#available-points")).to_have_text("1,250")
    expect(page.locator("#total-points")).to_have_text("4,000")
    live = page.locator("#live-offers tbody th .title")
    expect(live).to_have_text(
        ["10% off your next coffee", "Double points on Saturdays", "Free refill, always"]
    )
    coffee = page.locator("#live-offers tbody tr").first
    expect(coffee).to_contain_text("in 3 days")
    expect(coffee.get_by_text("Terms")).to_be_visible()
    expect(coffee.get_by_text("Valid in participating stores.")).to_be_hidden()
    left_out = page.locator("#left-out tbody tr")
    expect(left_out).to_have_count(2)
    expect(left_out.filter(has_text="Free pastry with any drink")).to_contain_text("Expired")
    expect(left_out.filter(has_text="$5 off a bag of beans")).to_contain_text("Not redeemable")

    # The sandbox's own logos, live and left out alike, loaded (not broken).
    logos = page.locator("img.logo")
    expect(logos).to_have_count(3)
    for index in range(3):
        logos.nth(index).scroll_into_view_if_needed()
        expect(logos.nth(index)).to_have_js_property("naturalWidth", 80)
    assert sandbox.stats()["logo_requests"] >= 2

    # Times in UTC, and the agent's own (New York) beside them.
    expect(page.locator("#fetched-at + .local-time")).to_contain_text("EST your time")
    # The JSON: folded, indented, the same as Braze's.
    json_panel = page.locator("#braze-json")
    expect(json_panel).to_be_hidden()
    page.get_by_text("Show the JSON").click()
    expect(json_panel).to_be_visible()
    braze = requests.get(
        f"{live_server.url}/v1/wallets/demo-alice",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert json.loads(json_panel.text_content()) == braze.json()
    expect(page.locator("#snippet")).to_contain_text(
        "<WALLET_PROXY_PUBLIC_URL>/v1/wallets/{{${user_id}}} :basic_auth wallet_proxy"
    )

    # Copy buttons, from the page's one script.
    page.get_by_role("button", name="Copy user_offer_id").first.click()
    expect(page.get_by_role("button", name="Copy user_offer_id").first).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == "a11ce000-0000-4000-8000-000000000002"

    first_fetch = page.locator("#fetched-at").text_content()
    clock.advance(seconds=5)
    page.reload()
    expect(page.locator("#fetched-at")).to_have_text(first_fetch)  # still the cached copy
    expect(page.locator("#cache-state .badge")).to_have_text("fresh")
    page.get_by_role("button", name="Refresh from SessionM").click()
    expect(page.get_by_role("status")).to_have_text("Fetched a fresh copy from SessionM.")
    expect(page.locator("#fetched-at")).not_to_have_text(first_fetch)
    expect(page.locator("#fetched-at")).to_have_attribute(
        "datetime", clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    history = page.locator("#history li")
    page.locator("#history summary").click()
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text(f"{STAFF} refreshed it from SessionM")
    expect(history.last).to_contain_text(f"{STAFF} looked it up")
    page.locator("#history summary").click()
    screenshots(page, "support-wallet")


def test_a_culture_switch_and_a_stale_copy(page, clock, app):
    from wallet_proxy.container import services

    services(app).wallet_service.rng = lambda: 0.5  # fresh for 57 s of the 60 s TTL
    log_in(page)
    look_up(page, "demo-alice")
    page.get_by_role("navigation", name="Culture").get_by_role("link", name="es-ES").click()
    expect(page.locator("#live-offers tbody .title").first).to_have_text(
        "10 % de descuento en tu próximo café"
    )
    expect(page.locator("#lookup-culture")).to_have_value("es-ES")
    clock.advance(seconds=58)
    page.reload()
    expect(page.locator("#cache-state .badge")).to_have_text("stale")
    expect(page.locator("#cache-state")).to_contain_text("age 58 s")
    expect(page.locator("#cache-text")).to_contain_text("(57 s after it was fetched)")
    screenshots(page, "support-stale-spanish")


def test_a_large_wallet_is_paged_and_filtered(page):
    log_in(page)
    look_up(page, "demo-carol")
    rows = page.locator("#live-offers tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#live-range")).to_have_text("Showing 1 to 50 of 2,500.")
    assert page.evaluate("document.documentElement.scrollHeight") < 20_000
    screenshots(page, "support-large-wallet")

    page.get_by_role("link", name="Next").click()
    expect(page.locator("#live-range")).to_have_text("Showing 51 to 100 of 2,500.")
    page.get_by_label("Filter offers by title or id").fill("Offer 1234")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".title")).to_have_text("Offer 1234")
    page.get_by_role("button", name="Copy offer_id").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == "c0000000-0000-4000-9000-000000001234"
    screenshots(page, "support-filtered")


def test_the_error_page_repeats_the_id_and_looks_up_again(page):
    log_in(page)
    look_up(page, "demo-bob")
    page.get_by_label("Customer id", exact=True).fill("nobody")
    page.get_by_role("button", name="Look up").click()
    heading = page.get_by_role("heading", name="404 SessionM does not know this user.")
    expect(heading).to_be_visible()
    expect(page.locator("#looked-up")).to_have_text("You looked up nobody in en-US.")
    expect(page.get_by_label("Customer id", exact=True)).to_have_value("nobody")
    screenshots(page, "support-not-found")
    page.get_by_label("Customer id", exact=True).fill("demo-alice")
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("heading", name="Wallet of demo-alice")).to_be_visible()


def test_hostile_texts_and_images_stay_text(page, sandbox):
    log_in(page)
    look_up(page, "demo-mallory")
    expect(page.locator("#live-offers tbody .title")).to_have_text("<script>alert(1)</script>")
    expect(page.locator("#live-offers")).to_contain_text("<img src=x onerror=alert(2)>")
    # Not an allowed image host: shown as text, never requested (the fixture checks).
    expect(page.locator(".image-url code")).to_have_text(
        "https://example.com/mallory-logo.png?a=1&b=2"
    )
    assert page.locator("body script, body img").count() == 0


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(page, browser, live_server):
    page.set_viewport_size(PHONE)
    log_in(page)
    look_up(page, "demo-alice", culture="es-ES")
    copy = browser.new_context(base_url=live_server.url)
    copy.add_cookies(page.context.cookies())
    stolen = copy.new_page()
    stolen.goto("/support/wallets/demo-alice")
    expect(stolen.get_by_role("heading", name="Wallet of demo-alice")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    stolen.goto("/support/wallets/demo-alice")
    expect(stolen).to_have_url(re.compile(r"/support/login\?next="))
    copy.close()
