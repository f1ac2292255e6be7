# SPDX-License-Identifier: AGPL-3.0-or-later
"""The API key: checked once at start-up, compared in constant time on every request.

The key is never logged, never echoed, and never part of an exception message.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

from ozwald.errors import Exit, OzwaldError

KEY_ENV = "OZWALD_SYSTEM_KEY"
MIN_KEY_LENGTH = 16


class ApiKeyError(OzwaldError, ValueError):
    """The configured API key is unusable; the server refuses to start. The message never holds the key."""

    exit_status = Exit.USAGE


def check_key(key: str | None) -> bytes:
    """Validate the API key and return the bytes that requests are compared against.

    Refuses an unset or empty key, one shorter than MIN_KEY_LENGTH characters, one with control
    characters (it could never be sent in a header), and one with leading or trailing whitespace
    (HTTP strips it, so it could never match).
    """
    if key is None or key == "":
        raise ApiKeyError(
            f"{KEY_ENV} is not set: the API refuses to start without a key of at least {MIN_KEY_LENGTH} characters"
        )
    if not isinstance(key, str):
        raise ApiKeyError(f"{KEY_ENV} must be a string")
    if len(key) < MIN_KEY_LENGTH:
        raise ApiKeyError(f"{KEY_ENV} is too short: use at least {MIN_KEY_LENGTH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise ApiKeyError(f"{KEY_ENV} contains control characters, which cannot be sent in an HTTP header")
    if key != key.strip():
        raise ApiKeyError(f"{KEY_ENV} starts or ends with whitespace, which HTTP strips from headers")
    return key.encode("utf-8")


def key_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The key from $OZWALD_SYSTEM_KEY, validated (raises ApiKeyError)."""
    key = (os.environ if environ is None else environ).get(KEY_ENV)
    check_key(key)
    assert key is not None
    return key


def bearer_matches(environ: Mapping[str, Any], key: bytes) -> bool | None:
    """Check the request's `Authorization: Bearer <token>` against `key`.

    Returns None when no bearer token was sent, else whether it matches. The scheme is
    case-insensitive (RFC 7235); the token is compared as bytes with hmac.compare_digest. WSGI
    gives header values as latin-1 text, so encoding them back yields the bytes that were sent.
    """
    header = environ.get("HTTP_AUTHORIZATION")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.lstrip(" ")
    if not token:
        return None
    try:
        sent = token.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(sent, key)
