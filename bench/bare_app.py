"""The baseline for the cache-hit benchmark: a bare Flask view returning fixed bytes.

The bytes are the service's own answer, captured first (BENCH_BODY_FILE), so both
sides send the same payload under the same gunicorn settings. It carries the same
request log (one JSON line and the request metrics per request, request_log.py), so
the ratio compares the service's own work, not the cost of logging;
BENCH_REQUEST_LOG=off leaves it out, to measure what the log itself costs.
"""

import os
from pathlib import Path

from flask import Flask, Response

from wallet_proxy import request_log
from wallet_proxy.logs import UserIds

body = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()
app = Flask(__name__)
if os.environ.get("BENCH_REQUEST_LOG", "on") != "off":
    request_log.install(app, UserIds(None))


@app.get("/v1/wallets/<user_id>")
def wallet(user_id):
    return Response(body, mimetype="application/json")
