"""`wallet-proxy plan`: before a send, what the budget allows, in plain words and numbers.

Pure arithmetic on the settings (no SessionM call, no Redis), for one kind of work per
run. `--recipients N` (Connected Content): how long a warm-up of N customers takes, the
Braze delivery rate limit that keeps a cold send inside the budget, what happens when
Braze sends faster, and the snippet to use. `--sync N` (`attributes sync`): the
/users/track requests and how long the sync takes, cold and after a warm-up (see
`make_sync_plan`).

The model, which bench/campaign.py measures against (docs/benchmarks.md):
- through the service each message costs one SessionM request however many times
  Braze renders it (the renders share it through the cache); a warmed message none;
- a render the budget can't serve before its deadline gets 503, and Braze's `:retry`
  tries the message again up to 5 times, 2 + 4 + 8 + 16 + 32 = 62 s of backoff at
  least, then aborts it. So by the time the last message's retries run out,
  SessionM has served at most budget x (first pass + 62 s) wallets: the rest risk
  being aborted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import click

from ..attributes.values import NAMES
from ..budget import PROMISE, paced_rate
from ..config import TRACK_BATCH, Settings
from .commands import load_settings
from .csvinput import BadInput
from .durations import Duration, spoken
from .sync import RATE_OPTION as SYNC_RATE_OPTION

COLD_HEADROOM = 0.95  # of the paced rate, for Braze's uneven minute, retries and refreshes
WARM_RATE_OPTION = 50.0  # `warm --rate`'s default, a further cap on the warm-up
RETRY_BACKOFF = (2, 4, 8, 16, 32)  # Braze's :retry, seconds before each retry
MIN_FRESH_FOR, MAX_FRESH_FOR = 60.0, 4 * 3600.0
FRESH_FOR_STEP = 15 * 60
UNHEALTHY_FAILURES, UNHEALTHY_SHARE = 3000, 0.9  # per minute: Braze stops calling the host
FASTER = (2, 3, 10)  # delivery rates shown, as multiples of the budget
# Braze's /users/track: "3,000 requests per three seconds" (its rate limits page), what
# paces a sync with WALLET_PROXY_BRAZE_TRACK_RATE=0.
BRAZE_TRACK_BURST = 3000 / 3
SNIPPET = (
    "{% connected_content https://YOUR-HOST/v1/wallets/{{${user_id}}} "
    ":basic_auth wallet_proxy :retry :save wallet %}\n"
    "{% if wallet.__http_status_code__ != 200 %}{% abort_message('no wallet') %}{% endif %}"
)


@dataclass(frozen=True)
class Faster:
    """A cold send at `per_second` messages/s, faster than the budget."""

    per_second: float
    first_pass: float  # seconds for Braze to send every message once
    retried: int  # messages whose first render gets no wallet: they wait for a retry
    at_risk: int  # messages that may still have none when their retries run out
    unhealthy: bool  # Braze would mark the host unhealthy and stop calling it for a minute


@dataclass(frozen=True)
class Plan:
    recipients: int
    renders: int
    rate: float  # SessionM requests/s for the fleet
    paced: float  # what the budget sustains of it (budget.paced_rate)
    warm_rate: float  # wallets/s a warm-up gets
    warm_seconds: float
    cold_per_minute: int  # the Braze delivery rate limit for a cold send
    cold_seconds: float
    fresh_for: float  # the --fresh-for the warm-up and the send need (may pass the maximum)
    send_within: float | None
    faster: tuple[Faster, ...]


def make_plan(
    settings: Settings, recipients: int, renders: int, send_within: float | None
) -> Plan:
    rate = settings.sessionm_rate
    paced = paced_rate(rate)
    warm_rate = min(paced * settings.bulk_share, WARM_RATE_OPTION)
    warm_seconds = recipients / warm_rate
    cold_per_minute = max(1, math.floor(paced * 60 * COLD_HEADROOM))
    fresh_for = FRESH_FOR_STEP * math.ceil((warm_seconds + (send_within or 0)) / FRESH_FOR_STEP)
    return Plan(
        recipients=recipients,
        renders=renders,
        rate=rate,
        paced=paced,
        warm_rate=warm_rate,
        warm_seconds=warm_seconds,
        cold_per_minute=cold_per_minute,
        cold_seconds=recipients / (cold_per_minute / 60),
        fresh_for=max(3600.0, fresh_for),
        send_within=send_within,
        faster=tuple(_faster(recipients, renders, paced, k * rate) for k in FASTER),
    )


def _faster(recipients: int, renders: int, rate: float, per_second: float) -> Faster:
    first_pass = recipients / per_second
    served_first = recipients * rate / per_second
    served_by_last_retry = rate * (first_pass + sum(RETRY_BACKOFF))
    failures_per_minute = (per_second - rate) * renders * 60
    return Faster(
        per_second=per_second,
        first_pass=first_pass,
        retried=round(recipients - served_first),
        at_risk=max(0, math.ceil(recipients - served_by_last_retry)),
        unhealthy=failures_per_minute > UNHEALTHY_FAILURES
        and (per_second - rate) / per_second > UNHEALTHY_SHARE,
    )


def describe(plan: Plan, settings: Settings) -> str:
    n = f"{plan.recipients:,}"
    fresh_for = min(plan.fresh_for, MAX_FRESH_FOR)
    lines = [
        f"SessionM budget: {plan.rate:g} requests/s for the whole fleet "
        f"(WALLET_PROXY_SESSIONM_RATE), sustained at {plan.paced:.3g}/s so that SessionM "
        f"never sees more than {PROMISE:g} x {plan.rate:g} in a second; a warm-up takes at most "
        f"{settings.bulk_share:.0%} of it, background refreshes {settings.refresh_share:.0%}.",
        "",
        "Warmed send (recommended):",
        f"  Warming {n} customers takes about {spoken(plan.warm_seconds)} "
        f"({plan.warm_rate:.3g} wallets/s).",
        f"  wallet-proxy warm FILE --fresh-for {_option(fresh_for)}",
        f"  Each wallet stays fresh for {spoken(fresh_for)} after it is warmed, so the "
        f"send must end within {spoken(max(0, fresh_for - plan.warm_seconds))} of the warm-up's "
        "end. A warmed message makes no SessionM call: any delivery rate works that the "
        f"service's instances can answer ({plan.renders} renders per message).",
        f"  Past that, wallets are served stale for up to {spoken(settings.stale_ttl)} "
        "(WALLET_PROXY_STALE_TTL) while background refreshes renew them.",
    ]
    if plan.fresh_for > MAX_FRESH_FOR:
        lines.append(
            f"  Too long: --fresh-for is at most {spoken(MAX_FRESH_FOR)}. Warm and send the "
            "audience in parts."
        )
    lines += [
        "",
        "Cold send (not warmed):",
        f"  Set Braze's delivery rate limit to at most {plan.cold_per_minute:,} messages per "
        f"minute. Each message costs one SessionM request (its {plan.renders} renders share "
        f"it through the cache); that is {COLD_HEADROOM:.0%} of what the budget sustains, "
        "leaving room for "
        "Braze's uneven minute and its retries.",
        f"  The send then takes about {spoken(plan.cold_seconds)}.",
    ]
    if plan.send_within is not None:
        fits = plan.cold_seconds <= plan.send_within
        lines.append(
            f"  That {'fits' if fits else 'does not fit'} in {spoken(plan.send_within)}"
            + ("." if fits else ": warm first.")
        )
    lines += [
        "",
        "If Braze sends a cold send faster than that:",
        "  messages/minute   first pass   wait for a retry   at risk of abort",
    ]
    for row in plan.faster:
        warning = "  (Braze marks the host unhealthy)" if row.unhealthy else ""
        lines.append(
            f"  {row.per_second * 60:>15,.0f}   {spoken(row.first_pass):>10}   "
            f"{row.retried:>16,}   {row.at_risk:>16,}{warning}"
        )
    lines += [
        f"  Renders the budget can't serve before their {settings.deadline:g} s deadline get "
        "503 with Retry-After; with :retry, Braze sends the message again later, up to 5 "
        f"times over at least {sum(RETRY_BACKOFF)} s, then aborts it. Until then SessionM "
        f"serves {plan.paced:.3g} wallets/s: whoever is left risks being aborted.",
        "",
        "Connected Content (with :retry, so a render refused for budget comes back):",
        *(f"  {line}" for line in SNIPPET.splitlines()),
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class SyncPlan:
    """An `attributes sync` of `customers`: Braze's side, then SessionM's, cold and warmed."""

    customers: int
    requests: int  # at most: only customers whose attributes changed are sent
    track_rate: float  # requests/s started (WALLET_PROXY_BRAZE_TRACK_RATE, else Braze's burst)
    braze_seconds: float  # the requests alone, at that rate
    wallet_rate: float  # wallets/s from SessionM (0: no budget to plan against)
    cold_seconds: float | None  # None without a budget
    warmed_seconds: float


def make_sync_plan(settings: Settings, customers: int) -> SyncPlan:
    """Cold: wallets come at the bulk share of what the budget sustains (capped by the
    command's --rate), the requests at the Braze rate, side by side: the slower bounds it.
    Warmed: wallets come from the shared cache, so the Braze rate alone does."""
    requests = math.ceil(customers / settings.braze_track_batch)
    track_rate = settings.braze_track_rate or BRAZE_TRACK_BURST
    braze_seconds = requests / track_rate
    wallet_rate = 0.0
    cold_seconds = None
    if settings.sessionm_rate:
        wallet_rate = min(
            paced_rate(settings.sessionm_rate) * settings.bulk_share, SYNC_RATE_OPTION
        )
        cold_seconds = max(customers / wallet_rate, braze_seconds)
    return SyncPlan(
        customers, requests, track_rate, braze_seconds, wallet_rate, cold_seconds, braze_seconds
    )


def describe_sync(plan: SyncPlan, settings: Settings) -> str:
    n = f"{plan.customers:,}"
    pace = (
        f"started at most {plan.track_rate:g}/s (WALLET_PROXY_BRAZE_TRACK_RATE)"
        if settings.braze_track_rate
        else f"at Braze's burst limit, {plan.track_rate:,.0f}/s (WALLET_PROXY_BRAZE_TRACK_RATE=0)"
    )
    lines = [
        f"Sync of {n} customers' loyalty attributes to Braze (wallet-proxy attributes sync):",
        f"  Braze: at most {plan.requests:,} /users/track requests of "
        f"{settings.braze_track_batch} profiles (WALLET_PROXY_BRAZE_TRACK_BATCH), {pace}: "
        f"{spoken(plan.braze_seconds)}. Only customers whose attributes changed are sent, "
        "so a sync with little new sends fewer.",
    ]
    if plan.cold_seconds is None:
        lines.append(
            "  Cold: WALLET_PROXY_SESSIONM_RATE is 0 (no budget): wallets come at the "
            f"command's --rate ({SYNC_RATE_OPTION:g}/s by default) or SessionM's own pace."
        )
    else:
        lines.append(
            f"  Cold (each wallet from SessionM): {plan.wallet_rate:.3g} wallets/s, the bulk "
            f"share ({settings.bulk_share:.0%}) of what the budget of "
            f"{settings.sessionm_rate:g} requests/s sustains: about {spoken(plan.cold_seconds)}."
        )
    lines += [
        "  Warmed (wallet-proxy warm FILE just before, with WALLET_PROXY_REDIS_URL): no "
        f"SessionM call, the Braze rate alone bounds it: about {spoken(plan.warmed_seconds)} "
        "(after the warm-up, which takes the cold time).",
        "  Braze's limits: 3,000 /users/track requests every three seconds, others by "
        "contract (its API Usage Dashboard shows yours); 75 attributes objects a request, "
        f"50 in all on Monthly Active Users CY 24-25 contracts (set "
        f"WALLET_PROXY_BRAZE_TRACK_BATCH=50; now {settings.braze_track_batch} of "
        f"{TRACK_BATCH}).",
        f"  Data points: Braze bills each attribute set. The first sync sets {len(NAMES)} a "
        f"customer ({len(NAMES) * plan.customers:,}), later ones only what changed; --stamp "
        "adds one a customer at every sync.",
    ]
    return "\n".join(lines)


def _option(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes = rest // 60
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")


@click.command("plan")
@click.option(
    "--recipients",
    type=click.IntRange(1, 100_000_000),
    help="Customers in a Connected Content send.",
)
@click.option(
    "--sync",
    type=click.IntRange(1, 100_000_000),
    help="Customers an `attributes sync` writes to Braze.",
)
@click.option(
    "--renders",
    default=2,
    show_default=True,
    type=click.IntRange(1, 10),
    help="With --recipients: Connected Content calls Braze makes per message (HTML, plain "
    "text, AMP).",
)
@click.option(
    "--send-within",
    type=Duration(60, 7 * 86_400),
    help="With --recipients: how long the send may take, e.g. 2h.",
)
@click.pass_context
def plan_command(
    ctx: click.Context,
    recipients: int | None,
    sync: int | None,
    renders: int,
    send_within: float | None,
) -> None:
    """Before a send, calling nothing. --recipients N: how long warming takes, the Braze
    delivery rate to set, what happens if Braze sends faster, and the snippet to use.
    --sync N: the requests to Braze and how long an `attributes sync` takes."""
    if (recipients is None) == (sync is None):
        raise click.UsageError("give exactly one of --recipients and --sync")
    settings = load_settings()
    if sync is not None:
        for name in ("renders", "send_within"):
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
                option = "--" + name.replace("_", "-")
                raise click.UsageError(f"{option} goes with --recipients, not --sync")
        click.echo(describe_sync(make_sync_plan(settings, sync), settings))
        return
    assert recipients is not None
    if not settings.sessionm_rate:
        raise BadInput(
            "WALLET_PROXY_SESSIONM_RATE is 0 (no budget): set SessionM's requests per second "
            "to plan against"
        )
    click.echo(describe(make_plan(settings, recipients, renders, send_within), settings))
