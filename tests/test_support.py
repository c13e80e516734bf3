"""The support pages through Flask's test client: auth, CSRF, escaping, errors, headers."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from werkzeug.security import check_password_hash, generate_password_hash

from tests.helpers import API_KEY, free_port
from tests.staff import (
    PASSWORD,
    PW_HASH,
    STAFF,
    STAFF_SETTINGS,
    assert_page,
    basic,
    log_in,
    staff_env,
    token_in,
)
from wallet_proxy import cli, create_app
from wallet_proxy.support import age_text, expiry_text, security_headers, staff
from wallet_proxy.wallet import iso_z


@pytest.fixture
def env(env, tmp_path):
    return staff_env(env, tmp_path / "data")


@pytest.fixture
def staff_client(client):
    assert log_in(client).status_code == 303
    return client


def braze_json(page: str) -> str:
    return html.unescape(re.search(r'<pre id="braze-json"[^>]*>(.*?)</pre>', page, re.S).group(1))


def fetched_at(page: str) -> str:
    return re.search(r'<time id="fetched-at" datetime="([^"]+)"', page).group(1)


# Who gets in


def test_no_staff_users_means_no_pages(env):
    app = create_app({k: v for k, v in env.items() if k not in STAFF_SETTINGS} | {"TESTING": True})
    client = app.test_client()
    for path in ("/support/", "/support/login", "/support/static/support.css"):
        response = client.get(path)
        assert_page(response, 404)
        assert response.headers["Cache-Control"] == "no-store"
    assert client.post("/support/login", data={"name": STAFF}).status_code == 404


def test_anonymous_agent_is_sent_to_the_login_and_back(client):
    response = client.get("/support/wallets/demo-alice?culture=es-ES")
    assert response.status_code == 303
    assert response.location == "/support/login?next=/support/wallets/demo-alice?culture%3Des-ES"
    back = log_in(client, next_="/support/wallets/demo-alice?culture=es-ES")
    assert back.status_code == 303
    assert back.location == "/support/wallets/demo-alice?culture=es-ES"
    assert client.get(back.location).status_code == 200


def test_login_failure_does_not_say_which_part_was_wrong(client):
    wrong_password = log_in(client, password="nope nope nope")
    unknown_user = log_in(client, name="nobody")
    for response in (wrong_password, unknown_user):
        assert (response.status_code, response.mimetype) == (401, "text/html")
        assert "Wrong name or password." in response.text
    assert client.get("/support/").status_code == 303


def test_login_needs_the_forms_csrf_token(client):
    client.get("/support/login")
    missing = client.post("/support/login", data={"name": STAFF, "password": PASSWORD})
    forged = client.post(
        "/support/login", data={"name": STAFF, "password": PASSWORD, "csrf_token": "forged"}
    )
    for response in (missing, forged):
        assert_page(response, 400)
        assert "reload the page" in response.text
    assert client.get("/support/").status_code == 303


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/support/",
        "//evil.example/support/",
        "/v1/wallets/demo-alice",
        "/support\\..\\v1",
        "",
    ],
)
def test_login_never_redirects_off_the_support_pages(client, target):
    assert log_in(client, next_=target).location == "/support/"


def test_login_starts_a_new_session(client):
    before = token_in(client.get("/support/login").text)
    log_in(client)
    after = token_in(client.get("/support/").text)
    assert before != after


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_session_cookie_is_httponly_lax_and_secure_over_https(client, scheme):
    response = log_in(client, base_url=f"{scheme}://localhost")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) == (scheme == "https")


def test_logout_is_a_post_with_csrf(staff_client):
    assert_page(staff_client.post("/support/logout"), 400)
    assert staff_client.get("/support/").status_code == 200
    token = token_in(staff_client.get("/support/").text)
    response = staff_client.post("/support/logout", data={"csrf_token": token})
    assert (response.status_code, response.location) == (303, "/support/login")
    assert staff_client.get("/support/").status_code == 303


def test_a_new_password_ends_old_sessions(staff_client, make_app):
    cookie = staff_client.get_cookie("session").value
    for pw_hash, status in ((PW_HASH, 200), (generate_password_hash("new", "pbkdf2"), 303)):
        other = make_app(WALLET_PROXY_STAFF_USERS=f"{STAFF}:{pw_hash}").test_client()
        other.set_cookie("session", cookie)
        assert other.get("/support/").status_code == status


def test_a_login_lasts_a_working_day(staff_client, clock):
    clock.advance(seconds=staff.SESSION_SECONDS)
    assert staff_client.get("/support/").status_code == 200
    clock.advance(seconds=1)
    assert staff_client.get("/support/").status_code == 303


def test_http_basic_opens_the_pages(client):
    assert client.get("/support/", headers=basic(STAFF, PASSWORD)).status_code == 200
    for headers in (basic(STAFF, "wrong password"), basic("nobody", PASSWORD)):
        response = client.get("/support/", headers=headers)
        assert_page(response, 401)
        assert "Basic" in response.headers["WWW-Authenticate"]


def test_api_keys_do_not_open_the_pages_nor_staff_logins_the_api(client, auth):
    assert client.get("/support/", headers=auth).status_code == 303
    assert client.get("/support/", headers=basic("braze", API_KEY)).status_code == 401
    api = client.get("/v1/wallets/demo-alice", headers=basic(STAFF, PASSWORD))
    assert api.status_code == 401 and api.mimetype == "application/json"


def test_the_api_opens_no_session_even_with_a_staff_cookie(app, staff_client, auth):
    cookie = staff_client.get_cookie("session")
    assert cookie is not None  # a logged-in agent's browser...
    with app.test_request_context("/v1/wallets/demo-alice", headers=auth):
        from flask import request

        api_session = app.session_interface.open_session(app, request)
    with app.test_request_context("/support/", headers={"Cookie": f"session={cookie.value}"}):
        from flask import request

        page_session = app.session_interface.open_session(app, request)
    assert app.session_interface.is_null_session(api_session)  # ...costs the API nothing
    assert not app.session_interface.is_null_session(page_session)


# What an agent sees


def test_wallet_page_shows_points_offers_and_what_was_left_out(staff_client):
    page = staff_client.get("/support/wallets/demo-alice").text
    assert 'id="available-points">1,250<' in page and 'id="total-points">4,000<' in page
    live = re.search(r'<table id="live-offers".*?</table>', page, re.S).group(0)
    titles = re.findall(r'<span class="title">([^<]+)</span>', live)
    assert titles == [
        "10% off your next coffee",
        "Double points on Saturdays",
        "Free refill, always",
    ]
    assert "in 3 days" in live and "in 30 days" in live and "never expires" in live
    assert "<details><summary>Terms</summary><p>Valid in participating stores." in live
    assert "a11ce000-0000-4000-8000-000000000002" in live and "COFFEE-10" in live
    left_out = re.search(r'<table id="left-out".*?</table>', page, re.S).group(0)
    pastry = re.search(r"Free pastry with any drink.*?</tr>", left_out, re.S).group(0)
    beans = re.search(r"\$5 off a bag of beans.*?</tr>", left_out, re.S).group(0)
    assert "Expired</strong>" in pastry and "expired 2 days ago" in pastry
    assert "Not redeemable</strong>" in beans


@pytest.mark.parametrize(
    ("user_id", "culture"),
    [
        ("demo-alice", "en-US"),
        ("demo-alice", "es-ES"),
        ("demo-bob", "en-US"),
        ("demo-mallory", "fr"),
    ],
)
def test_json_panel_shows_what_braze_gets(staff_client, auth, user_id, culture):
    page = staff_client.get(f"/support/wallets/{user_id}?culture={culture}").text
    api = staff_client.get(f"/v1/wallets/{user_id}?culture={culture}", headers=auth)
    assert json.loads(braze_json(page)) == api.get_json()
    assert braze_json(page) == json.dumps(api.get_json(), indent=2, ensure_ascii=False)
    exact = re.search(r'<a id="exact-json" href="([^"]+)"', page).group(1)
    raw = staff_client.get(html.unescape(exact))
    assert (raw.mimetype, raw.data) == ("application/json", api.data)


def test_connected_content_snippet_uses_this_services_url(make_app):
    base, login = "https://wallet-proxy.internal.example", basic(STAFF, PASSWORD)
    app = make_app(WALLET_PROXY_PUBLIC_URL=base)
    client = app.test_client()
    default = client.get("/support/wallets/demo-alice", headers=login).text
    spanish = client.get("/support/wallets/demo-alice?culture=es-ES", headers=login).text
    call = f"{base}/v1/wallets/{{{{${{user_id}}}}}}"
    assert f"{{% connected_content {call} :basic_auth wallet_proxy :retry :save wallet %}}" in (
        html.unescape(default)
    )
    assert f"{call}?culture=es-ES :basic_auth wallet_proxy" in html.unescape(spanish)
    assert "10 % de descuento en tu próximo café" in spanish


def test_everything_from_sessionm_is_escaped(staff_client):
    page = staff_client.get("/support/wallets/demo-mallory").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&lt;b&gt;html&lt;/b&gt; &amp; &#34;quotes&#34;" in page
    assert "<script>" not in page and "<img src=x" not in page and "<b>" not in page


def test_lookup_form_lands_on_the_wallet_page(staff_client):
    response = staff_client.get("/support/?user_id=+demo-alice+&culture=es-ES")
    assert response.location == "/support/wallets/demo-alice?culture=es-ES"
    assert staff_client.get("/support/?user_id=demo-bob").location == (
        "/support/wallets/demo-bob?culture=en-US"
    )


def test_pages_are_accessible_basics(staff_client):
    for path in ("/support/", "/support/wallets/demo-alice"):
        page = staff_client.get(path).text
        assert '<html lang="en">' in page
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
        for field in re.findall(r'<input id="([^"]+)"', page):
            assert f'<label for="{field}">' in page
    page = staff_client.get("/support/wallets/demo-alice").text
    assert page.count('<th scope="col">') == 13 and page.count('<th scope="row"') == 5


# Refresh


def test_refresh_bypasses_the_cache_and_updates_it(staff_client, sandbox, clock, auth):
    first = staff_client.get("/support/wallets/demo-alice").text
    clock.advance(seconds=5)
    assert fetched_at(staff_client.get("/support/wallets/demo-alice").text) == fetched_at(first)
    assert sandbox.stats()["calls_by_user"] == {"demo-alice": 1}

    form = {"csrf_token": token_in(first), "culture": "en-US"}
    response = staff_client.post("/support/wallets/demo-alice/refresh", data=form)
    assert (response.status_code, response.location) == (
        303,
        "/support/wallets/demo-alice?culture=en-US",
    )
    assert sandbox.stats()["calls_by_user"] == {"demo-alice": 2}
    page = staff_client.get(response.location).text
    assert "Fetched a fresh copy from SessionM." in page
    assert fetched_at(page) == iso_z(clock()) != fetched_at(first)
    api = staff_client.get("/v1/wallets/demo-alice", headers=auth)
    assert api.headers["X-Cache"] == "HIT" and api.get_json()["fetched_at"] == iso_z(clock())


def test_refresh_needs_csrf_and_a_post(staff_client, sandbox):
    response = staff_client.post("/support/wallets/demo-alice/refresh", data={"culture": "en-US"})
    assert_page(response, 400)
    assert sandbox.stats()["calls_by_user"] == {}
    assert staff_client.get("/support/wallets/demo-alice/refresh").status_code == 405


def test_refresh_keeps_the_old_copy_when_sessionm_fails(staff_client, sandbox):
    token = token_in(staff_client.get("/support/wallets/demo-alice").text)
    sandbox.configure(status=500)
    response = staff_client.post(
        "/support/wallets/demo-alice/refresh", data={"csrf_token": token, "culture": "en-US"}
    )
    page = staff_client.get(response.location).text
    assert "SessionM did not answer: this is still the older copy." in page


# Errors


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/support/?user_id=bad id!", "user_id must be"),
        ("/support/?user_id=demo-alice&culture=english", "culture must look like"),
        ("/support/wallets/" + "x" * 129, "user_id must be"),
        ("/support/wallets/demo-alice?culture=e", "culture must look like"),
    ],
)
def test_bad_input_is_a_400_page(staff_client, path, message):
    response = staff_client.get(path)
    assert_page(response, 400)
    assert message in response.text and 'href="/support/"' in response.text


def test_unmatched_support_urls_are_pages_too(staff_client):
    assert_page(staff_client.get("/support/no-such-page"), 404)
    wrong_method = staff_client.get("/support/wallets/demo-alice/refresh")
    assert_page(wrong_method, 405)
    assert "POST" in wrong_method.headers["Allow"]


def test_unknown_customer_is_a_404_page(staff_client):
    response = staff_client.get("/support/wallets/nobody")
    assert_page(response, 404)
    assert "SessionM does not know this user." in response.text


@pytest.mark.parametrize(
    ("knobs", "status"),
    [({"garbage": True}, 502), ({"status": 429}, 503), ({"latency": 1.0}, 504)],
)
def test_sessionm_trouble_is_a_friendly_page(sandbox, knobs, status, make_app):
    app = make_app(WALLET_PROXY_DEADLINE=0.2)
    client = app.test_client()
    log_in(client)
    sandbox.configure(**knobs)
    response = client.get("/support/wallets/demo-alice")
    assert_page(response, status)
    assert "Try" in response.text and 'href="/support/"' in response.text


def test_security_headers_on_every_support_response(client, staff_client):
    anonymous = type(staff_client)(staff_client.application)
    responses = [
        anonymous.get("/support"),
        anonymous.get("/support/login"),
        anonymous.get("/support/"),
        anonymous.get("/support/static/support.css"),
        staff_client.get("/support/"),
        staff_client.get("/support/wallets/demo-alice"),
        staff_client.get("/support/wallets/nobody"),
        staff_client.get("/support/?user_id=bad id!"),
        staff_client.get("/support/no-such-page"),
        staff_client.post("/support/wallets/demo-alice/refresh"),
    ]
    expected = security_headers(())
    for response in responses:
        for name, value in expected.items():
            assert response.headers.get(name) == value, (response.request.path, name)
    policy = expected["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self';" in policy and "img-src 'self' data:;" in policy
    assert "Content-Security-Policy" not in client.get("/healthz").headers


def test_pages_have_no_inline_script_or_style(client, staff_client):
    pages = [
        client.get("/support/login").text,
        staff_client.get("/support/").text,
        staff_client.get("/support/wallets/demo-alice").text,
        staff_client.get("/support/wallets/nobody").text,
    ]
    only_script = '<script src="/support/static/support.js" defer></script>'
    for page in pages:
        assert page.count("<script") == page.count(only_script) <= 1
        assert (
            "<style" not in page
            and " style=" not in page
            and not re.search(r"<[^>]* on\w+=", page)
        )
    assert client.get("/support/static/support.js").mimetype == "text/javascript"


# Helpers and commands


@pytest.mark.parametrize(
    ("days", "hours", "text"),
    [
        (0, 2, "ends today"),
        (1, 0, "ends tomorrow"),
        (3, 0, "in 3 days"),
        (0, -1, "expired today"),
        (-1, 0, "expired yesterday"),
        (-2, 0, "expired 2 days ago"),
    ],
)
def test_expiry_text_counts_utc_calendar_days_like_braze(days, hours, text):
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert expiry_text(now + timedelta(days=days, hours=hours), now) == text
    assert expiry_text(None, now) == "never expires"


def test_age_text():
    assert [age_text(s) for s in (0, 119, 120, 7199, 7200)] == [
        "0 s",
        "119 s",
        "2 min",
        "119 min",
        "2 h",
    ]


def test_hash_password_prompts_twice_without_echo(make_app):
    runner = CliRunner()
    result = runner.invoke(cli.main, ["hash-password"], input="s3cret-pass\ns3cret-pass\n")
    assert result.exit_code == 0, result.output
    assert "s3cret-pass" not in result.output
    pw_hash = result.output.strip().splitlines()[-1]
    assert check_password_hash(pw_hash, "s3cret-pass")
    app = make_app(WALLET_PROXY_STAFF_USERS=f"ops:{pw_hash}")
    assert (
        app.test_client().get("/support/", headers=basic("ops", "s3cret-pass")).status_code == 200
    )

    mismatch = runner.invoke(cli.main, ["hash-password"], input="aaaaaaaa\nbbbbbbbb\n")
    assert mismatch.exit_code != 0 and "do not match" in mismatch.output


def test_hash_password_reads_stdin_for_scripts():
    runner = CliRunner()
    result = runner.invoke(cli.main, ["hash-password", "--stdin"], input="from-a-script\n")
    assert result.exit_code == 0
    assert check_password_hash(result.output.strip(), "from-a-script")
    short = runner.invoke(cli.main, ["hash-password", "--stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 8 characters" in short.output


def test_demo_has_a_staff_login(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo keeps its data in ./demo-data
    env: dict = {}
    process = cli._start_sandbox(free_port(), env)
    try:
        cli._print_demo("127.0.0.1:8000", env)
        banner = capsys.readouterr().out
        assert "http://127.0.0.1:8000/support/" in banner
        assert f"{cli.DEMO_STAFF_USER} / {cli.DEMO_STAFF_PASSWORD}" in banner
        client = create_app({**env, "TESTING": True}).test_client()
        demo = basic(cli.DEMO_STAFF_USER, cli.DEMO_STAFF_PASSWORD)
        assert client.get("/support/wallets/demo-bob", headers=demo).status_code == 200
        # The demo shows the sandbox's own logos.
        assert env["WALLET_PROXY_IMAGE_HOSTS"] == env["SESSIONM_CONNECT_URL"]
        alice = client.get("/support/wallets/demo-alice", headers=demo).text
        assert f'<img class="logo" src="{env["SESSIONM_CONNECT_URL"]}/_sandbox/logos/' in alice
    finally:
        cli._stop([process])


# Password guessing


def test_repeated_failures_lock_the_name_even_for_the_right_password(client, clock):
    for _ in range(10):
        assert log_in(client, password="wrong password").status_code == 401
    locked = log_in(client)
    assert_page(locked, 429)
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    assert_page(client.get("/support/", headers=basic(STAFF, PASSWORD)), 429)
    clock.advance(minutes=14)
    assert_page(log_in(client), 429)
    clock.advance(minutes=1, seconds=1)  # a window after the last failure
    assert log_in(client).status_code == 303


def test_a_success_clears_earlier_failures(client):
    for _ in range(9):
        log_in(client, password="wrong password")
    assert log_in(client).status_code == 303
    for _ in range(9):
        assert log_in(client, password="wrong password").status_code == 401
    assert log_in(client).status_code == 303


def test_basic_auth_failures_count_too(client):
    for _ in range(10):
        assert client.get("/support/", headers=basic(STAFF, "wrong")).status_code == 401
    assert_page(client.get("/support/", headers=basic(STAFF, PASSWORD)), 429)
