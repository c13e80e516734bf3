"""The baseline for the triggers benchmark: a bare Flask POST that parses the same JSON
body and answers the same 202, storing nothing, under the same gunicorn settings."""

import json
import uuid

from flask import Flask, Response, request

app = Flask(__name__)


@app.post("/v1/braze/triggers")
def accept():
    json.loads(request.get_data())
    answer = {"trigger_id": f"trg_{uuid.uuid4().hex}", "status": "queued"}
    return Response(json.dumps(answer), 202, mimetype="application/json")
