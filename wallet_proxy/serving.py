"""The one gunicorn command line, shared by `wallet-proxy serve`, the tests and the benchmarks.

Everything that starts the service goes through `gunicorn_command`, so the packaged
configuration (wallet_proxy/gunicorn_config.py) is what runs everywhere, whether
from a checkout or an installed package.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

CONFIG = "python:wallet_proxy.gunicorn_config"
APP = "wallet_proxy:create_app()"


def gunicorn_command(
    *,
    bind: str | None = None,
    config: str = CONFIG,
    options: Sequence[str] = (),
    app: str = APP,
) -> list[str]:
    """`python -m gunicorn` with our config; `options` override single settings after it."""
    command = [sys.executable, "-m", "gunicorn", "-c", config]
    if bind:  # else the config's own: WALLET_PROXY_BIND or 0.0.0.0:8000
        command += ["--bind", bind]
    return [*command, *options, app]
