"""Shared by the trigger tests: triggers to accept, and the sandbox's Braze at hand."""

from __future__ import annotations

from wallet_proxy.braze_users import EXTERNAL_ID, BrazeUser
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY, SandboxServer
from wallet_proxy.triggers.model import CAMPAIGN, Trigger

BRAZE_KEY = DEMO_BRAZE_API_KEY


class BrazeServer(SandboxServer):
    """The sandbox, seen from its Braze side: knobs, calls and messages."""

    def set(self, **knobs):
        """Braze's knobs (`configure` is SessionM's)."""
        return self.braze.configure(knobs)

    def calls(self) -> list[dict]:
        return self.braze.stats()["braze_calls"]

    def messages(self) -> list[dict]:
        return self.braze.stats()["braze_messages"]

    def held(self) -> int:
        """Calls the `hold_after` knob holds now."""
        return self.braze.stats()["braze_held"]


def trigger(
    recipient: str | BrazeUser | None = "cust-1",
    target: str = "camp-1",
    kind=CAMPAIGN,
    attributes: dict | None = None,
    **props,
):
    """A trigger for `recipient`: an external id, any other BrazeUser, or None (broadcast)."""
    return Trigger(
        kind=kind,
        target_id=target,
        broadcast=recipient is None,
        recipient=BrazeUser(EXTERNAL_ID, recipient) if isinstance(recipient, str) else recipient,
        attributes=attributes or {},
        properties={"offer_title": "10 % off", **props},
    )
