"""The baseline for hits from Redis: a bare Flask view returning bytes it reads from Redis.

What a team would write instead of the service: the view reads the answer a warm-up left
in Redis under `bench:answer:<id>` (BENCH_REDIS_URL) with redis-py, and returns it.
"""

import os

import redis
from flask import Flask, Response, abort

client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
app = Flask(__name__)


@app.get("/v1/wallets/<user_id>")
def wallet(user_id):
    body = client.get(f"bench:answer:{user_id}")
    if body is None:
        abort(404)
    return Response(body, mimetype="application/json")
