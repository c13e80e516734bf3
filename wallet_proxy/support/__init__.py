"""Support pages: what Braze gets for one customer, and why, for staff in a browser.

Server-rendered; one small script from 'self' adds copy buttons and local times, so
the strict Content-Security-Policy (no inline script, no eval) costs nothing. The
pages read through the same wallet service and renderer as the API, so what they
show is what Braze gets. They exist only when staff accounts are configured.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import api
from ..attributes.values import NAMES, Attributes, attributes_of, loyalty_of
from ..attributes.written import KEEP, Written, WrittenStoreError
from ..cache import Entry
from ..container import Services, services
from ..origins import origin_of
from ..rules import canonical_culture, check_culture, check_user_id
from ..schemas import EXPIRY_FIELDS
from ..wallet import EXPIRED, NOT_REDEEMABLE, days_left, iso_z, live_view
from ..wallet_service import Lookup
from . import listing, staff
from . import tags as tag_pages
from . import triggers as trigger_pages
from .blueprint import bp
from .state import EXTENSION, build_state, support_state

PUBLIC_ENDPOINTS = {"support.static", "support.login"}
REASONS = {
    EXPIRED: ("Expired", "its expiry date has passed, so the API leaves it out."),
    NOT_REDEEMABLE: (
        "Not redeemable",
        "SessionM marks it is_redeemable: false (for example, not enough points).",
    ),
}
# How long Braze keeps a Connected Content answer (docs/braze.md quotes its rules): "If a
# cache time is not specified, the default cache time is five minutes"; with :cache_max_age,
# "the maximum cache time is four hours".
BRAZE_CACHE_AGE = timedelta(minutes=5)
BRAZE_MAX_CACHE_AGE = timedelta(hours=4)
# Above this size the page shows the answer with its offers cut short, and links the
# exact bytes: a 2,500-offer wallet is over 800 KB of JSON.
JSON_PREVIEW_BYTES = 32_000
JSON_PREVIEW_OFFERS = 3
PUBLIC_URL_PLACEHOLDER = "<WALLET_PROXY_PUBLIC_URL>"


def init_app(app: Flask, found: Services) -> None:
    """The pages, their state and the staff session cookie (signed with
    WALLET_PROXY_SECRET_KEY, which is set whenever staff users are)."""
    app.extensions[EXTENSION] = build_state(found)
    if found.settings.secret_key:
        app.secret_key = found.settings.secret_key
    app.session_interface = staff.StaffSessionInterface()
    # The trigger and tags pages are on the same blueprint (its guard, its CSRF): imported above.
    assert trigger_pages.bp is bp and tag_pages.bp is bp
    app.register_blueprint(bp)


@functools.lru_cache(maxsize=4)
def security_headers(image_hosts: tuple[str, ...]) -> dict[str, str]:
    """Images only from the listed origins (WALLET_PROXY_IMAGE_HOSTS); scripts only ours."""
    images = " ".join(("'self'", "data:", *image_hosts))
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


@bp.after_app_request
def _security_headers(response):
    """On every answer under /support/, errors and the static files included."""
    if request.path == bp.url_prefix or request.path.startswith(f"{bp.url_prefix}/"):
        response.headers.update(security_headers(services().settings.image_hosts))
    return response


@bp.before_request
def _guard():
    """No staff accounts: no pages. Then CSRF on every POST, then a staff login."""
    if not staff.staff_users():
        abort(404)
    if request.method == "POST":
        staff.check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    g.staff = staff.session_staff() or staff.basic_staff()
    if g.staff is None:
        # Back to a page after login, never to a POST-only URL.
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for(".login", next=target), 303)
    return None


@bp.context_processor
def _template_helpers() -> dict:
    settings = services().settings
    return {
        "csrf_token": staff.csrf_token,
        "utc": utc,
        "iso_z": iso_z,
        "expiry_text": expiry_text,
        "age_text": age_text,
        "reasons": REASONS,
        "image_src": image_src,
        "expiry_fields": EXPIRY_FIELDS,
        "cultures": settings.cultures,
        "canonical_culture": canonical_culture,
        "default_culture": settings.default_culture,
        "looked_up": looked_up(),
    }


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = staff.safe_next(request.values.get("next"), url_for(".index"))
    if request.method == "GET":
        return render_template("support/login.html", next=target)
    name = request.form.get("name", "")
    if staff.check_credentials(name, request.form.get("password", "")):
        staff.log_in(name)
        return redirect(target, 303)
    failed = render_template("support/login.html", next=target, name=name, failed=True)
    return failed, 401


@bp.post("/logout")
def logout():
    staff.log_out()
    return redirect(url_for(".login"), 303)


@bp.get("/")
def index():
    """The lookup form; submitting it (GET) lands on the customer's wallet page."""
    if "user_id" not in request.args:
        return render_template("support/index.html")
    user_id, culture = _checked(request.args["user_id"], request.args.get("culture"))
    return redirect(url_for(".wallet", user_id=user_id, culture=culture), 303)


@bp.get("/wallets/<user_id>")
def wallet(user_id: str):
    user_id, culture = _checked(user_id, request.args.get("culture"))
    shown = listing.parse(request.args)
    found = services()
    lookup, entry = look_up(user_id, culture)
    now = found.clock()
    braze_json = api.render(lookup, now, None)
    view = live_view(lookup.wallet, now)
    live = listing.page([o for o in view.live if listing.matches(o, shown.q)], shown.page)
    left_out = listing.page(
        [pair for pair in view.left_out if listing.matches(pair[0], shown.q)], shown.left_page
    )
    query = _culture_query(culture)
    return render_template(
        "support/wallet.html",
        lookup=lookup,
        wallet=lookup.wallet,
        view=view,
        live=live,
        left_out=left_out,
        shown=shown,
        page_url=functools.partial(_page_url, user_id, culture, shown),
        freshness=freshness(lookup, entry, now),
        braze_keeps_until=now + BRAZE_CACHE_AGE,
        braze_keeps_at_most_until=now + BRAZE_MAX_CACHE_AGE,
        history=staff.staff_history().visit(user_id, g.staff, culture),
        in_braze=in_braze(user_id, attributes_of(loyalty_of(lookup.wallet, now))),
        now=now,
        culture=culture,
        api_path=f"/v1/wallets/{user_id}{query}",
        braze_json=json_preview(braze_json),
        braze_size=len(braze_json),
        json_preview_bytes=JSON_PREVIEW_BYTES,
        json_preview_offers=JSON_PREVIEW_OFFERS,
        snippet=connected_content(query),
        public_url_placeholder=None if found.settings.public_url else PUBLIC_URL_PLACEHOLDER,
    )


@bp.get("/wallets/<user_id>/braze.json")
def braze_json(user_id: str):
    """Byte for byte what Braze gets right now, for the cases the page's preview cuts."""
    user_id, culture = _checked(user_id, request.args.get("culture"))
    found = services()
    lookup = found.wallet_service.lookup(user_id, culture)
    return Response(api.render(lookup, found.clock(), None), mimetype="application/json")


@bp.post("/wallets/<user_id>/refresh")
def refresh(user_id: str):
    """Fetch from SessionM now (bypassing and then updating the cache), then show the page."""
    user_id, culture = _checked(user_id, request.form.get("culture"))
    lookup = services().wallet_service.lookup(user_id, culture, refresh=True)
    staff.staff_history().refreshed(user_id, g.staff, culture)
    if lookup.stale:
        flash("SessionM did not answer: this is still the older copy.", "error")
    else:
        flash("Fetched a fresh copy from SessionM.")
    return redirect(url_for(".wallet", user_id=user_id, culture=culture), 303)


def _checked(user_id: str, culture: str | None) -> tuple[str, str]:
    """The API's own input rules (InvalidRequest, a 400 page, otherwise)."""
    user_id, culture = check_user_id(user_id.strip()), (culture or "").strip()
    return user_id, check_culture(culture) if culture else services().settings.default_culture


def _culture_query(culture: str) -> str:
    """Braze's URLs name the culture only when it is not the default."""
    default = services().settings.default_culture
    return "" if culture == default else f"?culture={culture}"


def _page_url(user_id: str, culture: str, shown: listing.Shown, **changes: int) -> str:
    """This wallet page with some of its listing parameters changed; defaults left out."""
    values: dict[str, Any] = {"q": shown.q, "page": shown.page, "left_page": shown.left_page}
    params = {k: v for k, v in (values | changes).items() if v and v != 1}
    return url_for(".wallet", user_id=user_id, culture=culture, **params)


def looked_up() -> str:
    """The customer id this request is about (also on error pages), as the agent typed it."""
    value = (request.view_args or {}).get("user_id") or request.args.get("user_id") or ""
    return str(value).strip()[:200]


@dataclass(frozen=True, slots=True)
class Freshness:
    """When the shown copy stops (or stopped) being fresh: the badge and its text agree."""

    stale: bool
    fresh_until: datetime | None  # None: the cache holds another copy by now


def look_up(user_id: str, culture: str) -> tuple[Lookup, Entry | None]:
    """The wallet, as Braze would get it now, and the cache entry holding that copy.

    The entry is read before the lookup too: a stale copy starts a refresh in the
    background, which may replace the entry before the page is rendered.
    """
    service = services().wallet_service
    before = service.peek(user_id, culture)
    lookup = service.lookup(user_id, culture)
    shown = lookup.wallet.fetched_at
    for entry in (before, service.peek(user_id, culture)):
        if entry is not None and entry.wallet is not None and entry.wallet.fetched_at == shown:
            return lookup, entry
    return lookup, None


@dataclass(frozen=True, slots=True)
class InBraze:
    """The loyalty attributes last written to the customer's Braze profile, beside what a
    write would send from the wallet shown."""

    written: Written | None  # None: none kept (or `unavailable`)
    unavailable: bool  # the store did not answer
    current: Attributes  # what a write would send from the wallet shown
    names: tuple[str, ...] = NAMES
    kept_days: int = int(KEEP // 86_400)

    def at(self) -> datetime | None:
        return datetime.fromtimestamp(self.written.at, UTC) if self.written else None


def in_braze(user_id: str, current: Attributes) -> InBraze:
    store = support_state().written
    assert store is not None  # the pages exist only with staff accounts, and so does this
    try:
        return InBraze(store.latest_for(user_id), False, current)
    except WrittenStoreError:
        return InBraze(None, True, current)


def freshness(lookup: Lookup, entry: Entry | None, now: datetime) -> Freshness:
    """From the entry's own fresh-until (lifetimes vary by up to 10 %, on purpose)."""
    if entry is None:
        return Freshness(lookup.stale, None)
    until = datetime.fromtimestamp(entry.fresh_until, UTC)
    return Freshness(now >= until, until)


def json_preview(body: bytes) -> str:
    """Braze's answer, indented; a large one with its offers cut to the first few."""
    answer = json.loads(body)
    if len(body) > JSON_PREVIEW_BYTES:
        answer["offers"] = answer["offers"][:JSON_PREVIEW_OFFERS]
    return json.dumps(answer, indent=2, ensure_ascii=False)


def image_src(url: str) -> str | None:
    """The URL when its origin is one of WALLET_PROXY_IMAGE_HOSTS, else None (shown as text)."""
    origin = origin_of(url)
    return url if origin is not None and origin in services().settings.image_hosts else None


def connected_content(query: str) -> str:
    """The Connected Content call of docs/braze.md, pointed at WALLET_PROXY_PUBLIC_URL. Without
    it, at a placeholder the page says how to fill: the request's Host is whatever a
    client sent, and a snippet naming it would send Braze, with its key, to that host."""
    origin = services().settings.public_url or PUBLIC_URL_PLACEHOLDER
    url = f"{origin}/v1/wallets/{{{{${{user_id}}}}}}{query}"
    return (
        f"{{% connected_content {url} :basic_auth wallet_proxy :retry :save wallet %}}\n"
        "{% if wallet.__http_status_code__ != 200 %}{% abort_message('no wallet') %}{% endif %}"
    )


def utc(moment: datetime, *, seconds: bool = False) -> str:
    return moment.astimezone(UTC).strftime(f"%Y-%m-%d %H:%M{':%S' if seconds else ''} UTC")


def expiry_text(expires_at: datetime | None, now: datetime) -> str:
    """Days as Braze counts them (`expires_in_days`: whole UTC calendar days)."""
    if expires_at is None:
        return "never expires"
    days = days_left(expires_at, now)
    if expires_at <= now:
        return {0: "expired today", -1: "expired yesterday"}.get(days, f"expired {-days} days ago")
    return {0: "ends today", 1: "ends tomorrow"}.get(days, f"in {days} days")


def age_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
