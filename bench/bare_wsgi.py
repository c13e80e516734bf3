"""The floor for the cache-hit benchmark: a raw WSGI callable returning fixed bytes.

No framework, no log, no metrics: what gunicorn itself costs to answer the same bytes
(BENCH_BODY_FILE, the service's own answer) under the same settings.
"""

import os
from pathlib import Path

body = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()
headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]


def app(environ, start_response):
    start_response("200 OK", headers)
    return [body]
