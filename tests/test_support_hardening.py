"""The support pages against an outside attacker: password guessing as a weapon, sessions
that outlive sign-out, header injection through `next`, tracking images, a forged Host."""

from __future__ import annotations

import threading

import pytest
import requests

from tests.helpers import LiveServer, wait_until
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
from wallet_proxy.config import ConfigError, Settings
from wallet_proxy.origins import origin_of, parse_origin
from wallet_proxy.support import staff
from wallet_proxy.support.state import support_state
from wallet_proxy.support.throttle import ADDRESS_FAILURES, NAME_FAILURES

ALICE = "/support/wallets/demo-alice"


@pytest.fixture
def env(env, tmp_path):
    return staff_env(env, tmp_path / "data")


# 1. Password hashing as a weapon


def test_guesses_from_one_address_are_refused_whatever_the_names(client):
    """A new name for every guess escaped the per-name count; the address's count holds."""
    for n in range(ADDRESS_FAILURES):
        assert client.get("/support/", headers=basic(f"guess-{n}", "wrong")).status_code == 401
    refused = client.get("/support/", headers=basic(STAFF, PASSWORD))
    assert_page(refused, 429)
    assert "from this address" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    colleague = client.get("/support/", headers=basic(STAFF, PASSWORD), environ_base=elsewhere)
    assert colleague.status_code == 200


def test_forwarded_for_is_ignored_without_trusted_hops(client):
    for n in range(ADDRESS_FAILURES):
        spoofed = {**basic(f"guess-{n}", "wrong"), "X-Forwarded-For": f"198.51.100.{n}"}
        client.get("/support/", headers=spoofed)
    fresh_claim = {**basic(STAFF, PASSWORD), "X-Forwarded-For": "198.51.100.250"}
    assert_page(client.get("/support/", headers=fresh_claim), 429)


def test_forwarded_for_names_the_client_across_trusted_hops(make_app):
    client = make_app(WALLET_PROXY_TRUSTED_PROXY_HOPS="1").test_client()
    # The trusted proxy appends the address it saw; what the client wrote before it is not
    # believed, so a client can't pick its own address to escape its count.
    for n in range(ADDRESS_FAILURES):
        forged = {**basic(f"guess-{n}", "wrong"), "X-Forwarded-For": f"1.1.1.{n}, 203.0.113.5"}
        assert client.get("/support/", headers=forged).status_code == 401
    attacker = {**basic(STAFF, PASSWORD), "X-Forwarded-For": "203.0.113.5"}
    assert_page(client.get("/support/", headers=attacker), 429)
    colleague = {**basic(STAFF, PASSWORD), "X-Forwarded-For": "203.0.113.6"}
    assert client.get("/support/", headers=colleague).status_code == 200


def test_a_locked_name_stays_locked_through_a_flood_of_other_names(client, app, clock):
    for _ in range(NAME_FAILURES):
        assert log_in(client, password="wrong password").status_code == 401
    throttle = support_state(app).login_throttle
    # The flood, recorded directly (through HTTP it would take minutes): junk names, each
    # from its own address. The shared store evicts nothing to make room for them.
    for n in range(1000):
        throttle.record(f"junk-{n}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", success=False)
    assert_page(log_in(client), 429)
    clock.advance(minutes=15, seconds=1)
    assert log_in(client).status_code == 303


def test_hashing_beyond_two_at_once_is_refused_without_hashing(client, app, monkeypatch):
    hashes = []
    real = staff.check_password_hash
    monkeypatch.setattr(
        staff, "check_password_hash", lambda *args: hashes.append(1) or real(*args)
    )
    release, busy = threading.Event(), []
    slots = support_state(app).hash_slots

    def hold() -> None:
        slots.run(lambda: busy.append(1) or release.wait(10))

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    try:
        wait_until(lambda: len(busy) == 2, timeout=5)
        refused = client.get("/support/", headers=basic(STAFF, PASSWORD))
        assert_page(refused, 429)
        assert refused.headers["Retry-After"] == "1" and "at once" in refused.text
        assert hashes == []
    finally:
        release.set()
        for holder in holders:
            holder.join()
    assert client.get("/support/", headers=basic(STAFF, PASSWORD)).status_code == 200
    assert hashes == [1]


# 8. Sign-out ends the session everywhere


def _two_apps(make_app, **settings):
    """Two instances of the service sharing a store, as two gunicorn workers do."""
    return make_app(**settings), make_app(**settings)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_sign_out_ends_a_copied_cookie_in_every_worker(tmp_path, store, request, make_app):
    settings = {}
    if store == "redis":
        settings["WALLET_PROXY_REDIS_URL"] = request.getfixturevalue("redis_url")
    first, second = _two_apps(make_app, **settings)
    if store == "redis":  # not sharing a folder: only Redis can tell the second
        second = make_app(**settings, WALLET_PROXY_DATA_DIR=str(tmp_path / "elsewhere"))
    agent = first.test_client()
    assert log_in(agent).status_code == 303
    cookie = agent.get_cookie("session").value
    thief = second.test_client()
    thief.set_cookie("session", cookie)
    assert thief.get(ALICE).status_code == 200

    token = token_in(agent.get("/support/").text)
    assert agent.post("/support/logout", data={"csrf_token": token}).status_code == 303
    assert thief.get(ALICE).status_code == 303
    replayed = first.test_client()
    replayed.set_cookie("session", cookie)
    assert replayed.get(ALICE).status_code == 303


def test_a_new_password_ends_sessions_in_every_worker(env, make_app):
    first, _ = _two_apps(make_app)
    agent = first.test_client()
    log_in(agent)
    cookie = agent.get_cookie("session").value
    from werkzeug.security import generate_password_hash

    changed = staff_env(
        env, env["WALLET_PROXY_DATA_DIR"], generate_password_hash("new!", "pbkdf2")
    )
    for app in (make_app(**changed), make_app(**changed)):
        copy = app.test_client()
        copy.set_cookie("session", cookie)
        assert copy.get(ALICE).status_code == 303


def test_sessions_need_their_store(tmp_path, make_app):
    """A store that can't be reached means nobody is signed in (a 503 page), never a 500."""
    broken = make_app(WALLET_PROXY_REDIS_URL="redis://127.0.0.1:9/0")
    client = broken.test_client()
    response = log_in(client)
    assert_page(response, 503)
    assert response.headers["Retry-After"] == "5"


def test_an_unwritable_data_folder_stops_start_up(tmp_path, make_app):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^WALLET_PROXY_DATA_DIR: can't create"):
        make_app(WALLET_PROXY_DATA_DIR=str(blocker / "data"))


# 9. Header injection through `next`


def test_next_with_a_line_break_falls_back_to_the_lookup(app):
    with LiveServer(app) as server:
        browser = requests.Session()
        target = "/support/%0d%0aX-Injected:1"
        form = browser.get(f"{server.url}/support/login?next={target}", timeout=5)
        assert form.status_code == 200 and "X-Injected" not in form.headers
        assert element(form.text, r'name="next" value="([^"]*)"') == "/support/"
        answer = browser.post(
            f"{server.url}/support/login",
            data={
                "csrf_token": token_in(form.text),
                "name": STAFF,
                "password": PASSWORD,
                "next": "/support/\r\nX-Injected:1",
            },
            allow_redirects=False,
            timeout=5,
        )
        assert (answer.status_code, answer.headers["Location"]) == (303, "/support/")
        assert "X-Injected" not in answer.headers


@pytest.mark.parametrize(
    "target",
    [
        "/support/\tx",
        "/support/ x",
        "/support/../v1/wallets/demo-alice",
        "/support/%2e%2e/v1/wallets/demo-alice",
        "/support/wallets/josé",
        "/supportx",
        "/support/\x00",
    ],
)
def test_next_must_be_a_plain_support_path(client, target):
    assert log_in(client, next_=target).location == "/support/"


def test_next_keeps_a_plain_support_path(client):
    target = "/support/wallets/demo-alice?culture=es-ES&q=10%25&page=2"
    assert log_in(client, next_=target).location == target


# 10. Images only from listed hosts


def test_without_image_hosts_no_image_loads_and_the_url_is_text(staff_client, sandbox):
    page = staff_client.get(ALICE).text
    assert "<img" not in page
    logo = f"{sandbox.url}/_sandbox/logos/coffee-logo.png"
    assert page.count(f"<code>{logo}</code>") == 2  # the coffee offer and the left-out pastry
    policy = staff_client.get(ALICE).headers["Content-Security-Policy"]
    assert "img-src 'self' data:;" in policy and "https:" not in policy


def test_images_load_from_listed_hosts_only(sandbox, make_app):
    client = make_app(WALLET_PROXY_IMAGE_HOSTS=f"{sandbox.url}/").test_client()
    log_in(client)
    response = client.get(ALICE)
    logo = f"{sandbox.url}/_sandbox/logos/coffee-logo.png"
    left_out = element(response.text, r'<table id="left-out"(.*?)</table>')
    assert f'<img class="logo" src="{logo}"' in left_out
    assert response.text.count("<img") == 3  # coffee, refill (its hero image), pastry
    assert f"img-src 'self' data: {sandbox.url};" in response.headers["Content-Security-Policy"]
    mallory = client.get("/support/wallets/demo-mallory").text
    assert "<img" not in mallory
    assert "<code>https://example.com/mallory-logo.png?a=1&amp;b=2</code>" in mallory


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://cdn.example.com/a.png", "https://cdn.example.com"),
        ("HTTPS://CDN.Example.com:443/a.png", "https://cdn.example.com"),
        ("http://127.0.0.1:8001/_sandbox/logos/x.png", "http://127.0.0.1:8001"),
        ("http://[::1]:8001/x.png", "http://[::1]:8001"),
        ("https://cdn.example.com@evil.example/a.png", None),
        ("https://cdn.example.com\\@evil.example/a.png", None),
        ("https://cdn.example.com /a.png", None),
        ("https://cdn.example.com:99999/a.png", None),
        ("javascript:alert(1)", None),
        ("data:image/png;base64,AAAA", None),
        ("//cdn.example.com/a.png", None),
        ("https://cdn.exämple.com/a.png", None),
        ("", None),
    ],
)
def test_origin_of_an_image_url(url, origin):
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    "value",
    ["cdn.example.com", "ftp://cdn.example.com", "https://cdn.example.com/images", "https://"],
)
def test_image_hosts_are_origins(env, value):
    with pytest.raises(ConfigError, match=r"^WALLET_PROXY_IMAGE_HOSTS: must be origins"):
        Settings.from_env({**env, "WALLET_PROXY_IMAGE_HOSTS": f"https://ok.example,{value}"})
    assert parse_origin("https://ok.example/") == "https://ok.example"


# 11. The public URL, not the Host header


def test_public_url_is_used_whatever_host_is_sent(make_app):
    app = make_app(WALLET_PROXY_PUBLIC_URL="https://wallet.example.com")
    with LiveServer(app) as server:
        forged = {"Host": "evil.example", **basic(STAFF, PASSWORD)}
        page = requests.get(f"{server.url}{ALICE}", headers=forged, timeout=5)
        snippet = element(page.text, r'<pre id="snippet"[^>]*>(.*?)</pre>')
        assert "https://wallet.example.com/v1/wallets/{{${user_id}}}" in snippet
        assert "evil.example" not in page.text
        slash = requests.get(
            f"{server.url}/support", headers=forged, allow_redirects=False, timeout=5
        )
        assert slash.headers["Location"] == "/support/"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/support", "/support/"),
        ("//support", "/support/"),
        ("/v1//wallets/x?a=1", "/v1/wallets/x?a=1"),
    ],
)
def test_without_a_public_url_redirects_are_relative(make_app, path, location):
    """Issue 19 item 11: werkzeug's own redirects are absolute, built from Host:
    `Host: evil.example` got `Location: http://evil.example/support/`."""
    with LiveServer(make_app()) as server:
        slash = requests.get(
            f"{server.url}{path}",
            headers={"Host": "evil.example"},
            allow_redirects=False,
            timeout=5,
        )
    assert slash.status_code == 308
    assert slash.headers["Location"] == location


def test_without_a_public_url_the_snippet_says_where_to_set_it(make_app):
    """Issue 19 item 11: the snippet named the Host a client sent, so a forged Host put a
    foreign host (which would get Braze's key) in what staff paste into Braze."""
    with LiveServer(make_app()) as server:
        forged = {"Host": "evil.example", **basic(STAFF, PASSWORD)}
        page = requests.get(f"{server.url}{ALICE}", headers=forged, timeout=5)
    assert page.status_code == 200
    assert "evil.example" not in page.text
    snippet = element(page.text, r'<pre id="snippet"[^>]*>(.*?)</pre>')
    assert "{% connected_content <WALLET_PROXY_PUBLIC_URL>/v1/wallets/{{${user_id}}} " in snippet
    hint = element(page.text, r'<p class="hint" id="public-url-unset">(.*?)</p>')
    assert "WALLET_PROXY_PUBLIC_URL" in hint


def test_public_url_must_be_an_origin(env):
    with pytest.raises(ConfigError, match=r"^WALLET_PROXY_PUBLIC_URL: must be an origin"):
        Settings.from_env({**env, "WALLET_PROXY_PUBLIC_URL": "https://wallet.example.com/x"})


@pytest.fixture
def staff_client(client):
    assert log_in(client).status_code == 303
    return client
