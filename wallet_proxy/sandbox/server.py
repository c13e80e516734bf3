"""The sandbox on a real socket: its APIs wired into one Flask app, plus the `/_sandbox/` knobs."""

import contextlib
from datetime import UTC, datetime
from typing import Any, Self

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from ..background import Loop
from .braze import DEMO_BRAZE_API_KEY, Braze
from .connect import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID, Connect
from .core import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET, Core
from .logos import Logos
from .state import Sandbox
from .wire import Clock, error


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_sandbox(
    connect_auth: str = DEMO_CONNECT_AUTH,
    retailer_id: str = DEMO_RETAILER_ID,
    core_api_key: str = DEMO_CORE_API_KEY,
    core_api_secret: str = DEMO_CORE_API_SECRET,
    clock: Clock | None = None,
    braze_api_key: str = DEMO_BRAZE_API_KEY,
) -> Sandbox:
    """Every API the sandbox speaks; credentials are parameters so tests can prove the proxy
    sends its own.

    `clock` returns an aware datetime; offer dates are computed from it at each request, so an
    offer seeded as expired is always expired.
    """
    now = clock or _utc_now
    return Sandbox(
        [
            Connect(connect_auth, retailer_id, now),
            Core(core_api_key, core_api_secret, now),
            Braze(braze_api_key),
            Logos(),
        ]
    )


def create_sandbox_app(sandbox: Sandbox) -> Flask:
    """Each API's routes, and the knobs, stats and reset under `/_sandbox/`."""
    # Named for the package, as the single module it replaces was, for its log lines.
    app = Flask(__package__ or __name__)
    for api in sandbox.apis:
        api.register(app, sandbox)

    @app.route("/_sandbox/config", methods=["GET", "POST"])
    def config() -> tuple[Response, int] | Response:
        knobs = request.get_json(silent=True) if request.method == "POST" else {}
        if not isinstance(knobs, dict):
            return jsonify(error("VALIDATION", "send a JSON object of knobs")), 400
        try:
            return jsonify(sandbox.configure(knobs))
        except ValueError as exc:
            return jsonify(error("VALIDATION", str(exc))), 400

    @app.get("/_sandbox/stats")
    def stats() -> Response:
        return jsonify(sandbox.stats())

    @app.post("/_sandbox/reset")
    def reset() -> Response:
        return jsonify(sandbox.reset())

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request: benchmarks send thousands; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SandboxServer:
    """The sandbox on a real socket (bound at construction, so `url` is known before start).

    Keyword arguments are those of `build_sandbox` (credentials, clock).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **sandbox_kwargs: Any) -> None:
        self._sandbox = build_sandbox(**sandbox_kwargs)
        self.app = create_sandbox_app(self._sandbox)
        self._server = make_server(
            host, port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://{host}:{self._server.server_port}"
        self._loop = Loop(
            "sessionm-sandbox",
            lambda _stop: self._server.serve_forever(poll_interval=0.05),
            wake=self._server.shutdown,
        )
        # Braze's stand-in has knobs of its own, so Braze can fail while SessionM answers.
        self.braze = next(api for api in self._sandbox.apis if isinstance(api, Braze))

    def start(self) -> Self:
        """Serve from a daemon thread; a short poll interval keeps `stop()` fast."""
        self._loop.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until Ctrl-C, then close the socket."""
        try:
            with contextlib.suppress(KeyboardInterrupt):
                self._server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop and close the port; calls held by `hang`, `latency`, `trickle` or Braze's
        `hold_after` are cut off."""
        self._sandbox.close()
        if self._loop.running:
            self._loop.stop(timeout=30)
        self._server.server_close()

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Set any subset of the knobs; returns them all. Raises ValueError on a bad one."""
        return self._sandbox.configure(knobs)

    def stats(self) -> dict[str, Any]:
        return self._sandbox.stats()

    def reset(self) -> None:
        self._sandbox.reset()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(host: str, port: int, **sandbox_kwargs: Any) -> None:
    """Run the sandbox in the foreground, for `wallet-proxy sandbox`."""
    SandboxServer(host, port, **sandbox_kwargs).serve_forever()
