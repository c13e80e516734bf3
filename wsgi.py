"""WSGI entry point: `gunicorn wsgi:app` from this folder (it reads ./gunicorn.conf.py, the
packaged configuration), `flask --app wsgi run`, or any WSGI server."""

import sys

from wallet_proxy import create_app
from wallet_proxy.config import ConfigError

# gunicorn's "App failed to load": its master stops instead of booting a worker again and
# again; any other server simply exits.
APP_LOAD_ERROR = 4

try:
    app = create_app()
except ConfigError as error:
    # One line for the operator, not a traceback: the message names the variable.
    print(f"wallet-proxy: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
