"""`wallet-proxy plan`: before a send, what the budget allows, in plain words and numbers.

Pure arithmetic on the settings (no SessionM call, no Redis), for one kind of work per
run. `--recipients N` (Connected Content): how long a warm-up of N customers takes, the
Braze delivery rate limit that keeps a cold send inside the budget, what happens when
Braze sends faster, and the snippet to use. `--webhooks N` (a webhook campaign tagging
N customers): the delivery rate to set in Braze for the relay's intake, and how long
SessionM Core takes to apply them (see `make_webhook_plan`). `--sync N` (`attributes
sync`): the /users/track requests and how long the sync takes, cold and after a warm-up
(see `make_sync_plan`).

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
from ..tags.worker import WORKER_PRIORITY
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
# Webhooks one instance (2 workers on 2 cores, the outbox in SQLite) stores per second, at
# least: bench/webhooks.py measures it and fails below it (the triggers, the same write,
# stored 656/s on a quiet machine: docs/benchmarks.md). And the share of it the delivery
# rate may use: Braze "will try to evenly distribute the message sends throughout the
# minute, but can't guarantee this", so a minute's webhooks may come in its first half.
INTAKE_PER_SECOND = 400
INTAKE_SHARE = 0.5
QUEUE_HEADROOM = 0.95  # of WALLET_PROXY_TAGS_MAX_QUEUED, the most a plan lets wait
BRAZE_ABORTS_AFTER = 72 * 3600  # "messages will be aborted if they're delayed 72 hours"
FASTER = (2, 3, 10)  # delivery rates shown, as multiples of the budget
# CPU a warmed render costs the service (a fresh cache hit, its request line and metrics
# included), in microseconds, at the deploy config's 64 threads per worker, the higher of
# two runs rounded up: bench/hits.py (a worker's own cache: 192 and 196) and
# bench/redis_hits.py (hits read from a shared Redis, the fleet's case: 494 and 551), on a
# 2-core machine at c7af98b, docs/benchmarks.md. Redis's own CPU is not in it.
CPU_PER_HIT_US = {"local": 200.0, "redis": 550.0}
CPU_UTILISATION = 0.7  # of each core a plan counts on: bursts, refreshes, the rest
BRAZE_DELIVERY_RATES = (10, 500_000)  # Braze's delivery rate limit, messages per minute
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
    delivery_rate: int | None  # messages per minute a warmed send goes at, if given
    cores: float | None  # cores the service needs for a warmed send at that rate
    hit_us: float  # CPU per warmed render it counts with


def make_plan(
    settings: Settings,
    recipients: int,
    renders: int,
    send_within: float | None,
    delivery_rate: int | None = None,
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
        delivery_rate=delivery_rate,
        cores=None if delivery_rate is None else warm_cores(settings, delivery_rate, renders),
        hit_us=CPU_PER_HIT_US["redis" if settings.redis_url else "local"],
    )


def warm_cores(settings: Settings, per_minute: int, renders: int) -> float:
    """Cores the service's instances need for a warmed send at `per_minute` messages: each
    message is `renders` cache hits, each costing CPU_PER_HIT_US, and a core is counted at
    CPU_UTILISATION."""
    hit_us = CPU_PER_HIT_US["redis" if settings.redis_url else "local"]
    return per_minute / 60 * renders * hit_us / 1e6 / CPU_UTILISATION


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
    if plan.delivery_rate is not None and plan.cores is not None:
        where = "read from Redis" if settings.redis_url else "from a worker's own cache"
        lines.append(
            f"  At {plan.delivery_rate:,} messages a minute ({plan.delivery_rate / 60:,.0f}/s x "
            f"{plan.renders} renders), the instances need about {plan.cores:.1f} cores "
            f"(at least {max(1, math.ceil(plan.cores))}): a warmed render costs about "
            f"{plan.hit_us:.0f} us of CPU ({where}), and each core is counted at "
            f"{CPU_UTILISATION:.0%}."
        )
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
class WebhookPlan:
    """A webhook campaign tagging `webhooks` customers, in the configured tags mode."""

    webhooks: int
    queued: bool  # WALLET_PROXY_TAGS_MODE
    rate: float  # Core's requests/s for the fleet
    paced: float  # what Core's budget sustains of it
    apply_rate: float  # tags applied per second
    per_minute: int  # the delivery rate to set in Braze
    send_seconds: float  # for Braze to send every webhook once
    applied_after: float  # from the send's start to the last tagging applied
    backlog: int  # the most taggings waiting in the queue at once
    bound_limited: (
        bool  # the rate is lower than the intake allows, for WALLET_PROXY_TAGS_MAX_QUEUED
    )


def make_webhook_plan(settings: Settings, webhooks: int) -> WebhookPlan:
    """Queued: Braze may send as fast as one instance stores webhooks (INTAKE_PER_SECOND,
    with room for Braze's uneven minute), unless the queue would pass its bound
    (WALLET_PROXY_TAGS_MAX_QUEUED); the worker applies them at the bulk share of what Core's
    budget sustains. Direct: each webhook waits for its own Core call, so Braze's rate is
    95 % of what the budget sustains, like a cold send's."""
    rate = settings.sessionm_core_rate
    paced = paced_rate(rate)
    queued = settings.tags_mode == "queued"
    if not queued:
        per_minute = max(1, math.floor(paced * 60 * COLD_HEADROOM))
        send_seconds = webhooks / (per_minute / 60)
        return WebhookPlan(
            webhooks,
            False,
            rate,
            paced,
            per_minute / 60,
            per_minute,
            send_seconds,
            send_seconds,
            0,
            False,
        )
    apply_rate = paced * settings.bulk_share
    per_minute = math.floor(INTAKE_PER_SECOND * 60 * INTAKE_SHARE)
    bound = settings.tags_max_queued * QUEUE_HEADROOM
    bound_limited = False
    if webhooks > bound:
        # The queue grows by (rate - apply_rate) for the send's length: at its end, it
        # holds webhooks - apply_rate x webhooks / rate, which must stay within the bound.
        under_bound = math.floor(60 * apply_rate * webhooks / (webhooks - bound))
        if under_bound < per_minute:
            per_minute, bound_limited = max(1, under_bound), True
    send_seconds = webhooks / (per_minute / 60)
    backlog = max(0, round(webhooks - apply_rate * send_seconds))
    applied_after = max(send_seconds, webhooks / apply_rate)
    return WebhookPlan(
        webhooks,
        True,
        rate,
        paced,
        apply_rate,
        per_minute,
        send_seconds,
        applied_after,
        backlog,
        bound_limited,
    )


def describe_webhooks(plan: WebhookPlan, settings: Settings) -> str:
    n = f"{plan.webhooks:,}"
    where = "campaign: Target Audiences, Delivery speed rate limiting; Canvas: Send Settings"
    budget = (
        f"SessionM Core budget: {plan.rate:g} requests/s for the whole fleet "
        f"(WALLET_PROXY_SESSIONM_CORE_RATE), sustained at {plan.paced:.3g}/s."
    )
    halt = (
        "Braze halts a host for a minute after 3,000 failed webhooks in a minute, and "
        "retries a webhook at most 5 times in 30 minutes: a tag not taken by then is lost."
    )
    if not plan.queued:
        return "\n".join(
            [
                budget,
                "",
                f"Webhook campaign tagging {n} customers, direct (WALLET_PROXY_TAGS_MODE=direct): "
                "each webhook waits for SessionM Core's answer.",
                f"  Set the delivery speed in Braze ({where}) to at most "
                f"{plan.per_minute:,} webhooks per minute: {COLD_HEADROOM:.0%} of what the "
                "budget sustains. Faster, the webhooks the budget can't serve within half of "
                "WALLET_PROXY_CORE_TIMEOUT get 503.",
                f"  Braze sends them, and SessionM applies them, in about "
                f"{spoken(plan.send_seconds)}.",
                f"  {halt} The halt is per host name: give the relay a host name of its own, "
                "apart from Connected Content's (docs/braze.md).",
            ]
        )
    share = settings.bulk_share
    lines = [
        budget,
        "",
        f"Webhook campaign tagging {n} customers, queued (WALLET_PROXY_TAGS_MODE=queued): "
        "the relay answers 202 once a webhook is stored, and one worker per instance "
        "applies the tags to SessionM Core.",
        f"  Set the delivery speed in Braze ({where}) to at most {plan.per_minute:,} "
        "webhooks per minute.",
    ]
    if plan.bound_limited:
        lines.append(
            f"  That keeps the queue within WALLET_PROXY_TAGS_MAX_QUEUED "
            f"({settings.tags_max_queued:,}) while SessionM applies them."
        )
    else:
        lines.append(
            f"  One instance stores at least {INTAKE_PER_SECOND:,} webhooks/s "
            "(docs/benchmarks.md); Braze may send a minute's webhooks in its first half, "
            f"so this is {INTAKE_SHARE:.0%} of that."
        )
    lines += [
        f"  Braze sends them in about {spoken(plan.send_seconds)}; up to {plan.backlog:,} "
        f"wait in the queue at once (WALLET_PROXY_TAGS_MAX_QUEUED: {settings.tags_max_queued:,}).",
        f"  SessionM applies {plan.apply_rate:.3g} taggings/s: the tags worker takes Core's "
        f"budget at the {WORKER_PRIORITY.value} priority, {share:.0%} of what it sustains "
        "(WALLET_PROXY_SESSIONM_BULK_SHARE), after any direct call. The last is applied "
        f"about {spoken(plan.applied_after)} after the send starts.",
        f"  Faster than that, webhooks the relay can't store in time fail. {halt}",
    ]
    if plan.send_seconds > BRAZE_ABORTS_AFTER:
        lines.append(
            "  Too slow for Braze: it aborts a message delayed 72 hours by the rate limit. "
            "Send the segment in parts."
        )
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
    "--webhooks",
    type=click.IntRange(1, 100_000_000),
    help="Customers a webhook campaign tags (the tags relay).",
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
@click.option(
    "--delivery-rate",
    type=click.IntRange(*BRAZE_DELIVERY_RATES),
    help="With --recipients: the Braze delivery rate limit of a warmed send (messages per "
    "minute), to say how many cores the service needs for it.",
)
@click.pass_context
def plan_command(
    ctx: click.Context,
    recipients: int | None,
    webhooks: int | None,
    sync: int | None,
    renders: int,
    send_within: float | None,
    delivery_rate: int | None,
) -> None:
    """Before a send, calling nothing. --recipients N: how long warming takes, the Braze
    delivery rate to set, what happens if Braze sends faster, and the snippet to use.
    --webhooks N: the delivery rate to set for the tags relay, and how long SessionM takes
    to apply the tags. --sync N: the requests to Braze and how long an `attributes sync`
    takes."""
    counts = {"--recipients": recipients, "--webhooks": webhooks, "--sync": sync}
    if sum(count is not None for count in counts.values()) != 1:
        raise click.UsageError(f"give exactly one of {', '.join(counts)}")
    settings = load_settings()
    other = "--webhooks" if webhooks is not None else "--sync" if sync is not None else None
    for name in ("renders", "send_within", "delivery_rate"):
        given = ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        if other is not None and given:
            option = "--" + name.replace("_", "-")
            raise click.UsageError(f"{option} goes with --recipients, not {other}")
    if sync is not None:
        click.echo(describe_sync(make_sync_plan(settings, sync), settings))
        return
    if webhooks is not None:
        if not settings.sessionm_core_rate:
            raise BadInput(
                "WALLET_PROXY_SESSIONM_CORE_RATE is 0 (no budget): set SessionM Core's "
                "requests per second to plan against"
            )
        click.echo(describe_webhooks(make_webhook_plan(settings, webhooks), settings))
        return
    assert recipients is not None
    if not settings.sessionm_rate:
        raise BadInput(
            "WALLET_PROXY_SESSIONM_RATE is 0 (no budget): set SessionM's requests per second "
            "to plan against"
        )
    plan = make_plan(settings, recipients, renders, send_within, delivery_rate)
    click.echo(describe(plan, settings))
