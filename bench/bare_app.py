"""The baseline for the cache-hit benchmark: a bare Flask view returning fixed bytes.

The bytes are the service's own answer, captured first (BENCH_BODY_FILE), so both
sides send the same payload under the same gunicorn settings.
"""

import os
from pathlib import Path

from flask import Flask, Response

body = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()
app = Flask(__name__)


@app.get("/v1/wallets/<user_id>")
def wallet(user_id):
    return Response(body, mimetype="application/json")
