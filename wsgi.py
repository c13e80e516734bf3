"""WSGI entry point: `gunicorn -c python:wallet_proxy.gunicorn_config wsgi:app`."""

from wallet_proxy import create_app
from wallet_proxy.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    # One line for the operator, not a traceback: the message names the variable.
    raise SystemExit(f"wallet-proxy: configuration error: {error}") from None
