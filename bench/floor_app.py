# SPDX-License-Identifier: AGPL-3.0-or-later
"""The floor of Ozwald's HTTP stack, for bench_api_load: Bottle + Waitress (8 threads) answering
GET /srv/services/active/ with a JSON document read from Redis, after a constant-time bearer check.

Runs INSIDE the test host with Ozwald's own venv, as a transient unit (see bench_api_load.py):

    /opt/ozwald/venv/bin/python floor_app.py   # FLOOR_KEY, FLOOR_REDIS_PASSWORD, FLOOR_PORT, FLOOR_REDIS_KEY

Nothing else: no plugins, no logging, no validation beyond the token. With FLOOR_MEMORY=1 the document is
read from Redis once at start and then served from memory, as Ozwald serves its statuses (informational).

Redis is read with Ozwald's own client, `ozwald/state/resp.py` (hiredis and a socket), loaded by its path so
that the floor does not import the rest of the ozwald package (its pydantic models would weigh on the floor's
memory).
"""

from __future__ import annotations

import hmac
import importlib.util
import os
from pathlib import Path

import bottle
import waitress


def _load_resp() -> object:
    package = importlib.util.find_spec("ozwald")  # finds the package without importing it
    assert package is not None and package.origin is not None, "run with Ozwald's venv"
    path = Path(package.origin).parent / "state" / "resp.py"
    spec = importlib.util.spec_from_file_location("ozwald_resp_floor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KEY = os.environ["FLOOR_KEY"].encode()
REDIS_KEY = os.environ.get("FLOOR_REDIS_KEY", "ozbench:active")
PORT = int(os.environ.get("FLOOR_PORT", "8001"))
THREADS = int(os.environ.get("FLOOR_THREADS", "8"))
MEMORY = os.environ.get("FLOOR_MEMORY") == "1"

resp = _load_resp()
cache = resp.Client(host="127.0.0.1", port=6379, password=os.environ["FLOOR_REDIS_PASSWORD"])  # type: ignore[attr-defined]
app = bottle.Bottle()
app.uninstall(True)  # like Ozwald: handlers return bytes
_document: bytes = cache.get(REDIS_KEY).encode() if MEMORY else b""


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
    body: bytes = cache.get(REDIS_KEY).encode()
    return body


if __name__ == "__main__":
    waitress.serve(app, host="0.0.0.0", port=PORT, threads=THREADS, ident="floor", _quiet=True)
