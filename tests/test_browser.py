"""The support pages in a real headless Chromium, against the app on a real HTTP server.

The app runs on conftest's threaded LiveServer with the SessionM sandbox behind it and
a clock the test moves by hand, so "Refresh changes the fetch time" is exact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright
from werkzeug.security import generate_password_hash

from tests.helpers import API_KEY

pytestmark = pytest.mark.browser

STAFF, PASSWORD = "agent", "correct horse battery"
ARTIFACTS = Path(__file__).parent / "artifacts"
# The sandbox's offer logos live on example.com: the browser gets this instead of the internet.
LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40">'
    b'<rect width="40" height="40" rx="8" fill="#6f4e37"/>'
    b'<circle cx="20" cy="20" r="10" fill="#f3e3c8"/></svg>'
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def env(env):
    return {
        **env,
        "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{generate_password_hash(PASSWORD)}",
        "WALLET_PROXY_SECRET_KEY": "browser-test-secret-key-0123456789",
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
def page(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1200, "height": 900}
    )
    context.set_default_timeout(5000)
    context.route(
        "https://example.com/**",
        lambda route: route.fulfill(body=LOGO, content_type="image/svg+xml"),
    )
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


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
    page.get_by_label("Culture").fill(culture)
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("heading", name=f"Wallet of {user_id}")).to_be_visible()


def test_agent_sees_alice_and_refreshes_her_wallet(page, live_server, clock):
    log_in(page)
    look_up(page, "demo-alice")

    expect(page.locator("#available-points")).to_have_text("1,250")
    expect(page.locator("#total-points")).to_have_text("4,000")
    live = page.locator("#live-offers tbody th")
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

    braze = requests.get(
        f"{live_server.url}/v1/wallets/demo-alice",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert page.locator("#braze-json").text_content() == braze.content.decode()
    expect(page.locator("#snippet")).to_contain_text(
        f"{live_server.url}/v1/wallets/{{{{${{user_id}}}}}} :basic_auth wallet_proxy"
    )

    first_fetch = page.locator("#fetched-at").text_content()
    clock.advance(seconds=5)
    page.reload()
    expect(page.locator("#fetched-at")).to_have_text(first_fetch)  # still the cached copy
    page.get_by_role("button", name="Refresh from SessionM").click()
    expect(page.get_by_role("status")).to_have_text("Fetched a fresh copy from SessionM.")
    expect(page.locator("#fetched-at")).not_to_have_text(first_fetch)
    expect(page.locator("#fetched-at")).to_have_attribute(
        "datetime", clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "support-wallet.png", full_page=True)
    assert page.dialogs == []


def test_hostile_title_is_text_and_raises_no_dialog(page):
    log_in(page)
    look_up(page, "demo-mallory")
    expect(page.locator("#live-offers tbody th")).to_have_text("<script>alert(1)</script>")
    expect(page.locator("#live-offers")).to_contain_text("<img src=x onerror=alert(2)>")
    assert page.locator("body script, body img:not(.logo)").count() == 0
    assert page.dialogs == []


def test_usable_at_phone_width_and_sign_out(page):
    page.set_viewport_size({"width": 375, "height": 812})
    log_in(page)
    look_up(page, "demo-alice", culture="es-ES")
    expect(page.locator("#live-offers tbody th").first).to_have_text(
        "10 % de descuento en tu próximo café"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "support-wallet-phone.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/support/wallets/demo-alice")
    expect(page).to_have_url("/support/login?next=/support/wallets/demo-alice")
