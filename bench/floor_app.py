# SPDX-License-Identifier: AGPL-3.0-or-later
"""The floor of Ozwald's HTTP stack, for bench_api_load: Bottle + Waitress (8 threads) answering
GET /srv/services/active/ with a JSON document read from Redis, after a constant-time bearer check.

Runs INSIDE the test host with Ozwald's own venv, as a transient unit (see bench_api_load.py):

    /opt/ozwald/venv/bin/python floor_app.py   # FLOOR_KEY, FLOOR_REDIS_PASSWORD, FLOOR_PORT, FLOOR_REDIS_KEY

Nothing else: no plugins, no logging, no validation beyond the token. With FLOOR_MEMORY=1 the document is
read from Redis once at start and then served from memory, as Ozwald serves its statuses (informational).
"""

from __future__ import annotations

import hmac
import os

import bottle
import redis
import waitress

KEY = os.environ["FLOOR_KEY"].encode()
REDIS_KEY = os.environ.get("FLOOR_REDIS_KEY", "ozbench:active")
PORT = int(os.environ.get("FLOOR_PORT", "8001"))
THREADS = int(os.environ.get("FLOOR_THREADS", "8"))
MEMORY = os.environ.get("FLOOR_MEMORY") == "1"

cache = redis.Redis(host="127.0.0.1", port=6379, password=os.environ["FLOOR_REDIS_PASSWORD"])
app = bottle.Bottle()
app.uninstall(True)  # like Ozwald: handlers return bytes
_document: bytes = cache.get(REDIS_KEY) if MEMORY else b""  # type: ignore[assignment]


@app.get("/srv/services/active/")  # type: ignore[untyped-decorator]
def active() -> bytes:
    header = bottle.request.environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    bottle.response.content_type = "application/json"
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"), KEY):
        bottle.response.status = 401
        return b'{"detail":"invalid bearer token"}'
    if MEMORY:
        return _document
    body: bytes = cache.get(REDIS_KEY)  # type: ignore[assignment]
    return body


if __name__ == "__main__":
    waitress.serve(app, host="0.0.0.0", port=PORT, threads=THREADS, ident="floor", _quiet=True)
