"""Support pages for SessionM-triggered Braze messages: a customer's recent triggers (by
any identifier Braze takes), and the dead letters with a re-queue button (a POST with the
form's CSRF token; `requeue_dead_letter` serves every queue's, the queued tags' too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from ..braze_users import EXTERNAL_ID, KINDS, USER_ALIAS, BrazeUser
from ..container import services
from ..errors import NotConfigured, TriggerStoreUnavailable, WalletProxyError
from ..rules import check_braze_user
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
    """Without a customer: the dead letters. With one, named by any identifier Braze takes
    (`by`: external_id, braze_id, user_alias with its `alias_label`, or email): theirs."""
    search = _search(request.args)
    outbox = _outbox()
    try:
        if search.user is not None:
            records = outbox.recent(search.user.index)
        else:
            records = outbox.listed(DEAD, limit=DEAD_LISTED)
        counts = outbox.counts()
    except OutboxError:
        raise TriggerStoreUnavailable() from None
    return render_template(
        "support/triggers.html",
        search=search,
        who=search.user.describe() if search.user is not None else None,
        kinds=KINDS,
        records=records,
        counts=counts,
        at=moment,
    )


@bp.post("/triggers/<trigger_id>/requeue")
def requeue_trigger(trigger_id: str):
    query: dict[str, Any] = _search(request.form).query()
    return requeue_dead_letter(
        _outbox(),
        trigger_id,
        again=f"Trigger {trigger_id} is queued for Braze again.",
        unavailable=TriggerStoreUnavailable,
        back_to=url_for(".triggers", **query),
    )


def requeue_dead_letter(
    outbox: Outbox,
    item_id: str,
    *,
    again: str,
    unavailable: type[WalletProxyError],
    back_to: str,
):
    """A re-queue button's POST: the dead letter queued again (`again` says so) or a note
    that it is not one, then back to the page it came from."""
    now = services().clock().timestamp()
    try:
        moved = outbox.move("requeue_dead", [item_id], now=now)
    except OutboxError:
        raise unavailable() from None
    if moved:
        flash(again)
    else:
        flash(f"{item_id} is not a dead letter (any more).", "error")
    return redirect(back_to, 303)


@dataclass(frozen=True)
class Search:
    """The customer asked for, as typed (the form shows it again) and as a Braze user."""

    by: str
    customer: str
    alias_label: str
    user: BrazeUser | None  # None: no customer, the dead letters

    def query(self) -> dict[str, str]:
        """The search's query string, to come back to it."""
        if self.user is None:
            return {}
        found = {"by": self.by, "customer": self.customer}
        return {**found, "alias_label": self.alias_label} if self.alias_label else found


def _search(args: Mapping[str, str]) -> Search:
    by = args.get("by", EXTERNAL_ID).strip() or EXTERNAL_ID
    customer = args.get("customer", "").strip()
    label = args.get("alias_label", "").strip() if by == USER_ALIAS else ""
    user = check_braze_user(by, customer, label) if customer else None
    return Search(by, customer, label, user)
