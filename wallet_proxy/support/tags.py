"""Support pages for the queued webhooks' tags: a customer's recent taggings, the dead
letters with a re-queue button (a POST with the form's CSRF token), as for triggers."""

from __future__ import annotations

from flask import render_template, request, url_for

from ..errors import NotConfigured, TagsStoreUnavailable
from ..rules import check_customer_id
from ..tags.model import state_word
from ..tags.setup import queued_tags_of
from ..triggers.model import DEAD
from ..triggers.outbox import Outbox, OutboxError
from .blueprint import bp
from .triggers import DEAD_LISTED, moment, requeue_dead_letter


def _queue() -> Outbox:
    queued = queued_tags_of()
    if queued is None:
        raise NotConfigured("Webhooks' tags are not queued on this service (direct mode).")
    return queued.queue


@bp.get("/tags")
def tags():
    """Without a customer: the dead letters. With one (the id Braze sent): their taggings."""
    customer = request.args.get("customer", "").strip()
    queue = _queue()
    try:
        if customer:
            records = queue.recent(check_customer_id(customer))
        else:
            records = queue.listed(DEAD, limit=DEAD_LISTED)
        counts = queue.counts()
    except OutboxError:
        raise TagsStoreUnavailable() from None
    return render_template(
        "support/tags.html",
        customer=customer,
        records=records,
        counts={state_word(state): count for state, count in counts.items()},
        word=state_word,
        at=moment,
    )


@bp.post("/tags/<tagging_id>/requeue")
def requeue_tagging(tagging_id: str):
    customer = request.form.get("customer", "").strip()
    return requeue_dead_letter(
        _queue(),
        tagging_id,
        again=f"Tagging {tagging_id} is queued for SessionM again.",
        unavailable=TagsStoreUnavailable,
        back_to=url_for(".tags", customer=customer) if customer else url_for(".tags"),
    )
