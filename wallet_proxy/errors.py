"""One error tree for the whole service: every error raised on purpose, and its HTTP status.

Modules raise the precise subclass; error_handlers.py turns any of them (and Werkzeug's
own HTTP errors) into a JSON body for the API or a page for people, so no view decides
statuses and no traceback ever reaches a client. This module imports nothing of the
service's, so every module can raise its errors.

Whether a failed SessionM call may still have been applied is part of its class,
because sending a counter tag again after one that was applied counts it twice.
Classes marked `NotApplied` say SessionM did nothing; any other failure may have
been applied. (psf/requests does the same: its `ConnectTimeout` is both a
`ConnectionError` and a `Timeout`, which is how it says "safe to retry".)

How the call failed                                 Class                   Applied?
--------------------------------------------------  ----------------------  --------
connection refused, and refused again on the retry  UpstreamConnectRefused  no
not sent by us (in-flight cap, breaker open)        UpstreamBusy            no
HTTP 429                                            UpstreamRateLimited     no
HTTP 503                                            UpstreamServerDeclined  no
HTTP 404 in SessionM's envelope, a not-found code   UserNotFound            no
other 4xx, an error envelope in a 2xx               UpstreamRejected        no
timed out (connecting, reading, deadline passed)    UpstreamTimeout         maybe
connection dropped or cut after sending             UpstreamUnavailable     maybe
other 5xx (a gateway may give up, SessionM not)     UpstreamServerError     maybe
a 2xx we cannot read                                InvalidUpstreamPayload  maybe
an answer over 5 MB, a 3xx                          UpstreamError           maybe
a wallet over our caps (offers or bytes, all pages) WalletTooLarge          maybe

Whether SessionM is failing (what the circuit breaker counts: timeouts, 5xx,
unavailability, never our own `UpstreamBusy`) is a separate question, answered by
the parent classes; the marker does not change it.
"""

from __future__ import annotations


class WalletProxyError(Exception):
    """Root of every error this service raises on purpose."""

    status = 500
    code = "internal_error"
    message = "Something went wrong on our side."
    retry_after: int | None = None

    def __init__(self, message: str | None = None, *, retry_after: int | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidRequest(WalletProxyError):
    status = 400
    code = "invalid_request"
    message = "The request is not valid."


class Unauthorized(WalletProxyError):
    status = 401
    code = "unauthorized"
    message = "A valid API key is required."


class TooManyAttempts(WalletProxyError):
    """Failed staff logins for one name, too many in a row (support pages)."""

    status = 429
    code = "too_many_attempts"
    message = "Too many failed logins for this name; wait a while before trying again."


class NotConfigured(WalletProxyError):
    status = 503
    code = "not_configured"
    message = "This feature is not configured on this service."


class NotApplied:
    """Marks failures SessionM did not act on: the call never reached it, or it said no
    before doing anything. Sending the same call again cannot apply it twice.

    A marker, never raised on its own: each marked class is also an `UpstreamError`.
    """


class UpstreamError(WalletProxyError):
    """SessionM answered, but not with anything we can use."""

    status = 502
    code = "upstream_error"
    message = "SessionM returned an unusable answer."


class InvalidUpstreamPayload(UpstreamError):
    message = "SessionM returned a payload of an unexpected shape."


class WalletTooLarge(UpstreamError):
    """SessionM's wallet for a customer is past our caps: refused, not cached, and the
    refusal remembered for WALLET_PROXY_NEGATIVE_TTL so renders don't download it again."""

    message = "This customer's wallet in SessionM is too large to serve."


class UpstreamRejected(NotApplied, UpstreamError):
    """SessionM answered no (a 4xx, or an error envelope): final, and nothing was done."""


class UserNotFound(NotApplied, UpstreamError):
    status = 404
    code = "user_not_found"
    message = "SessionM does not know this user."


class UpstreamUnavailable(UpstreamError):
    """SessionM could not be reached, is shedding load, or we are protecting it."""

    status = 503
    code = "upstream_unavailable"
    message = "SessionM is unavailable; try again shortly."
    retry_after = 5


class UpstreamConnectRefused(NotApplied, UpstreamUnavailable):
    """No connection could be made, so SessionM received nothing."""


class UpstreamServerError(UpstreamError):
    """SessionM answered 5xx: it is failing, which the circuit breaker counts."""

    message = "SessionM failed to answer."


class UpstreamServerDeclined(NotApplied, UpstreamServerError):
    """SessionM answered 503: it declined the call for now, without acting on it."""


class UpstreamRateLimited(NotApplied, UpstreamUnavailable):
    message = "SessionM is rate limiting us; try again shortly."


class UpstreamBusy(NotApplied, UpstreamUnavailable):
    """We refused to call SessionM (too many calls in flight, or the breaker is open)."""

    message = "Too many SessionM calls in flight; try again shortly."
    retry_after = 2


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    message = "SessionM did not answer in time."


class IdempotencyConflict(WalletProxyError):
    """An Idempotency-Key reused with another body (the tags relay)."""

    status = 422
    code = "idempotency_conflict"
    message = "This Idempotency-Key was used with a different body."


class IdempotencyInProgress(WalletProxyError):
    status = 409
    code = "idempotency_in_progress"
    message = "A request with this Idempotency-Key is still being processed."
    retry_after = 1


class IdempotencyUnavailable(WalletProxyError):
    status = 503
    code = "idempotency_unavailable"
    message = "The idempotency store is unavailable; try again shortly."
    retry_after = 2


class TriggerQueueFull(WalletProxyError):
    """WALLET_PROXY_TRIGGER_MAX_QUEUED triggers wait for Braze already; nothing was stored."""

    status = 503
    code = "trigger_queue_full"
    message = "Too many triggers are waiting for Braze; try again later."
    retry_after = 30


class StoreUnavailable(WalletProxyError):
    """The store of staff sessions and history (Redis, or the data folder's SQLite file)."""

    status = 503
    code = "store_unavailable"
    message = "The staff session store is unavailable; try again shortly."
    retry_after = 5


class TriggerStoreUnavailable(WalletProxyError):
    """The trigger outbox (disk or Redis) failed; nothing was stored."""

    status = 503
    code = "trigger_store_unavailable"
    message = "The trigger store is unavailable; nothing was accepted. Try again shortly."
    retry_after = 5


class QueueMaybeStored(WalletProxyError):
    """The outbox did not confirm a write in time: it may have stored it (one subclass per
    route, as each names what it stores)."""

    status = 503
    retry_after = 5


class QueueDiskFull(WalletProxyError):
    """The disk of the SQLite outbox is too full to take an item; nothing was stored, and
    what was stored before is still delivered (one subclass per route)."""

    status = 503
    retry_after = 60


class TriggerMaybeStored(QueueMaybeStored):
    code = "trigger_maybe_stored"
    message = (
        "The trigger store did not confirm in time; this trigger may have been stored. "
        "Send it again with the same Idempotency-Key (without one, the same body within "
        "10 minutes): a repeat is answered with the trigger's id, never stored twice."
    )


class TriggerDiskFull(QueueDiskFull):
    code = "trigger_disk_full"
    message = (
        "The disk holding the trigger store is full; nothing was accepted. "
        "Triggers already accepted are still delivered. Try again later."
    )


class TagsQueueFull(WalletProxyError):
    """WALLET_PROXY_TAGS_MAX_QUEUED webhooks wait for SessionM already; nothing was stored."""

    status = 503
    code = "tags_queue_full"
    message = "Too many webhooks' tags are waiting for SessionM; try again later."
    retry_after = 30


class TagsStoreUnavailable(WalletProxyError):
    """The queued tags' store (the outbox: disk or Redis) failed; nothing was stored."""

    status = 503
    code = "tags_store_unavailable"
    message = "The tags queue is unavailable; nothing was accepted. Try again shortly."
    retry_after = 5


class TagsMaybeStored(QueueMaybeStored):
    code = "tags_maybe_stored"
    message = (
        "The tags queue did not confirm in time; this webhook may have been stored. Send it "
        "again with the same Idempotency-Key: a repeat is recognised, never applied twice "
        "(without a key, sending it again may apply its tags twice)."
    )


class TagsDiskFull(QueueDiskFull):
    code = "tags_disk_full"
    message = (
        "The disk holding the tags queue is full; nothing was accepted. "
        "Webhooks already accepted are still applied. Try again later."
    )


def error_body(error: WalletProxyError) -> dict:
    return {"error": {"code": error.code, "message": error.message}}


def upstream_error_named(name: str) -> UpstreamError:
    """A failure another process marked by its class name (any class in the tree, so new
    ones travel too); a name this release doesn't know is a plain UpstreamError."""
    classes: list[type[UpstreamError]] = [UpstreamError]
    while classes:
        cls = classes.pop()
        if cls.__name__ == name:
            return cls()
        classes.extend(cls.__subclasses__())
    return UpstreamError()
