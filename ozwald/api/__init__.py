# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's HTTP API: a Bottle app served by Waitress, talking to the provisioner through ProvisionerCore.

Start it from code with `create_server(core, key)`, then `.run()` (foreground) or `.start()`
(background thread); the contract is `api/openapi.yaml`.
"""

from ozwald.api.app import create_app
from ozwald.api.auth import KEY_ENV, MIN_KEY_LENGTH, ApiKeyError, check_key, key_from_env
from ozwald.api.core import AdmissionError, CoreUnavailable, ProvisionerCore
from ozwald.api.parse import MAX_BODY_BYTES
from ozwald.api.server import ApiServer, create_server

__all__ = [
    "KEY_ENV",
    "MAX_BODY_BYTES",
    "MIN_KEY_LENGTH",
    "AdmissionError",
    "ApiKeyError",
    "ApiServer",
    "CoreUnavailable",
    "ProvisionerCore",
    "check_key",
    "create_app",
    "create_server",
    "key_from_env",
]
