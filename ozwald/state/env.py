# SPDX-License-Identifier: AGPL-3.0-or-later
"""Redis parameters as the provisioner uses them: the settings, plus the password from the environment.

The packages generate the password of Ozwald's own Redis (ozwald-redis.service) at install time and put it
in /etc/ozwald/ozwald.env (mode 0600) as OZWALD_REDIS_PASSWORD, so that the settings file can stay a
readable conffile. A password set in the settings wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import SecretStr

from ozwald.config.model import Provisioner, RedisParameters

REDIS_PASSWORD_ENV = "OZWALD_REDIS_PASSWORD"  # noqa: S105 - the name of a variable


def cache_parameters(provisioner: Provisioner, environ: Mapping[str, str] | None = None) -> RedisParameters:
    params = provisioner.cache.parameters
    password = (os.environ if environ is None else environ).get(REDIS_PASSWORD_ENV)
    if params.password is None and password:
        params = params.model_copy(update={"password": SecretStr(password)})
    return params
