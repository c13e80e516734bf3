"""Support pages: what Braze gets for one customer, and why, for staff in a browser.

Server-rendered and script-free, so the strict Content-Security-Policy costs nothing.
The pages read through the same wallet service and renderer as the API, so what
they show is what Braze gets. They exist only when staff accounts are configured.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import api
from ..rules import check_culture, check_user_id
from ..services import services
from ..wallet import EXPIRED, NOT_REDEEMABLE, days_left, iso_z, live_view
from . import staff

bp = Blueprint("support", __name__, url_prefix="/support", static_folder="static")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
PUBLIC_ENDPOINTS = {"support.static", "support.login"}
REASONS = {
    EXPIRED: ("Expired", "its expiry date has passed, so the API leaves it out."),
    NOT_REDEEMABLE: (
        "Not redeemable",
        "SessionM marks it is_redeemable: false (for example, not enough points).",
    ),
}


@bp.after_app_request
def _security_headers(response):
    """On every answer under /support/, errors and the stylesheet included."""
    if request.path == bp.url_prefix or request.path.startswith(f"{bp.url_prefix}/"):
        response.headers.update(SECURITY_HEADERS)
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
    return {
        "csrf_token": staff.csrf_token,
        "utc": utc,
        "iso_z": iso_z,
        "expiry_text": expiry_text,
        "age_text": age_text,
        "reasons": REASONS,
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
        default_culture = services().settings.default_culture
        return render_template("support/index.html", default_culture=default_culture)
    user_id, culture = _checked(request.args["user_id"], request.args.get("culture"))
    return redirect(url_for(".wallet", user_id=user_id, culture=culture), 303)


@bp.get("/wallets/<user_id>")
def wallet(user_id: str):
    user_id, culture = _checked(user_id, request.args.get("culture"))
    found = services()
    lookup = found.wallet_service.lookup(user_id, culture)
    now = found.clock()
    braze_json = api.render(lookup, now, None)
    query = _culture_query(culture)
    return render_template(
        "support/wallet.html",
        lookup=lookup,
        wallet=lookup.wallet,
        view=live_view(lookup.wallet, now),
        now=now,
        culture=culture,
        api_path=f"/v1/wallets/{user_id}{query}",
        braze_json=braze_json.decode(),
        braze_size=len(braze_json),
        snippet=connected_content(query),
        cache_ttl=found.settings.cache_ttl,
    )


@bp.post("/wallets/<user_id>/refresh")
def refresh(user_id: str):
    """Fetch from SessionM now (bypassing and then updating the cache), then show the page."""
    user_id, culture = _checked(user_id, request.form.get("culture"))
    lookup = services().wallet_service.lookup(user_id, culture, refresh=True)
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


def connected_content(query: str) -> str:
    """The README's Connected Content call, pointed at this service as staff reach it."""
    url = f"{request.host_url}v1/wallets/{{{{${{user_id}}}}}}{query}"
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


# Pages for SessionM-triggered Braze messages, on the same blueprint (its guard, its CSRF).
from . import triggers as _triggers  # noqa: E402, F401
