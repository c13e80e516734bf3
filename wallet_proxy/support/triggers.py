"""Support pages for SessionM-triggered Braze messages: a customer's recent triggers, and
the dead letters with a re-queue button (a POST with the form's CSRF token)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import flash, redirect, render_template, request, url_for

from ..container import services
from ..errors import NotConfigured, TriggerStoreUnavailable
from ..rules import check_customer_id
from ..triggers.model import DEAD
from ..triggers.outbox import Outbox, OutboxError
from ..triggers.setup import triggers_of
from .blueprint import bp

DEAD_LISTED = 50


def _outbox() -> Outbox:
    triggers = triggers_of()
    if triggers is None:
        raise NotConfigured("Braze triggers are not configured on this service.")
    return triggers.outbox


def moment(unix_time: float) -> datetime:
    return datetime.fromtimestamp(unix_time, UTC)


@bp.get("/triggers")
def triggers():
    """Without a customer: the dead letters. With one (Braze's external id): their triggers."""
    customer = request.args.get("customer", "").strip()
    outbox = _outbox()
    try:
        if customer:
            records = outbox.recent(check_customer_id(customer))
        else:
            records = outbox.listed(DEAD, limit=DEAD_LISTED)
        counts = outbox.counts()
    except OutboxError:
        raise TriggerStoreUnavailable() from None
    return render_template(
        "support/triggers.html", customer=customer, records=records, counts=counts, at=moment
    )


@bp.post("/triggers/<trigger_id>/requeue")
def requeue_trigger(trigger_id: str):
    customer = request.form.get("customer", "").strip()
    now = services().clock().timestamp()
    try:
        moved = _outbox().move("requeue_dead", [trigger_id], now=now)
    except OutboxError:
        raise TriggerStoreUnavailable() from None
    if moved:
        flash(f"Trigger {trigger_id} is queued for Braze again.")
    else:
        flash(f"Trigger {trigger_id} is not a dead letter (any more).", "error")
    target = url_for(".triggers", customer=customer) if customer else url_for(".triggers")
    return redirect(target, 303)
