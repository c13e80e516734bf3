"""wallet-proxy: SessionM offer wallets for Braze Connected Content.

`create_app` lives in factory.py and is imported on first use. gunicorn's configuration
imports this package in the master process (for the serving settings, config.py), which
must not load the app's modules: prometheus_client chooses its multiprocess mode when it
is first imported, and gunicorn_config.py prepares that mode before any worker starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .factory import create_app

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .factory import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
