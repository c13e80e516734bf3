"""Shared by the trigger tests: Braze's stand-in on a real socket, triggers to accept."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from wallet_proxy.braze_sandbox import DEMO_BRAZE_API_KEY, Braze
from wallet_proxy.triggers.model import CAMPAIGN, Trigger

BRAZE_KEY = DEMO_BRAZE_API_KEY


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args) -> None:
        pass


class BrazeServer:
    """The Braze stand-in served over real HTTP on a free port, in a thread."""

    def __init__(self):
        self.braze = Braze()
        app = Flask("braze-standin")
        self.braze.register(app)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.braze.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def configure(self, **knobs):
        return self.braze.configure(knobs)

    def calls(self) -> list[dict]:
        return self.braze.stats()["braze_calls"]

    def messages(self) -> list[dict]:
        return self.braze.stats()["braze_messages"]


def trigger(recipient: str | None = "cust-1", target: str = "camp-1", kind=CAMPAIGN, **props):
    return Trigger(
        kind=kind,
        target_id=target,
        broadcast=recipient is None,
        recipient=recipient,
        attributes={},
        properties={"offer_title": "10 % off", **props},
    )
