# SPDX-License-Identifier: AGPL-3.0-or-later
"""Which environment values are secret, and the settings as Ozwald shows them: secrets masked.

A value is secret when written as a mapping (`{value: ...}`, `{file: ...}`, `{credential: ...}`) unless it
says `secret: false`, and, by default, when its variable's name looks like it holds one (HF_TOKEN,
API_KEY, DB_PASSWORD, ...). Anything that shows settings to a client goes through `public_service`.
"""

from __future__ import annotations

import re
from typing import Any

from ozwald.config.model import EnvSource, Layer, Service

MASK = "********"
# Names that look like they hold a secret; `{value: ..., secret: false}` shows such a value anyway.
SECRET_LOOKING = re.compile(r"TOKEN|SECRET|PASSW|PASSPHRASE|(^|_)KEY($|_)|APIKEY|CREDENTIAL|PRIVATE|(^|_)AUTH",
                            re.IGNORECASE)


def is_secret(key: str, value: str | EnvSource) -> bool:
    """Whether the value of environment variable `key` must never be shown."""
    if isinstance(value, EnvSource):
        return value.secret
    return SECRET_LOOKING.search(key) is not None


def public_environment(environment: dict[str, str | EnvSource]) -> dict[str, str]:
    """An environment map as clients see it: secret values, and values read from elsewhere, masked."""
    shown: dict[str, str] = {}
    for key, value in environment.items():
        if is_secret(key, value):
            shown[key] = MASK
        elif isinstance(value, EnvSource):
            shown[key] = value.value.get_secret_value() if value.value is not None else MASK
        else:
            shown[key] = value
    return shown


def _public_layer(layer: Layer, dumped: dict[str, Any]) -> dict[str, Any]:
    if layer.environment is not None:
        dumped["environment"] = public_environment(layer.environment)
    return dumped


def public_service(service: Service) -> dict[str, Any]:
    """A service definition as JSON-ready data for GET /srv/services/configured/, secrets masked."""
    dumped = _public_layer(service, service.model_dump(mode="json", exclude_none=True))
    for section, layers in (("varieties", service.varieties), ("profiles", service.profiles)):
        for name, layer in layers.items():
            _public_layer(layer, dumped[section][name])
    return dumped
