# SPDX-License-Identifier: AGPL-3.0-or-later
"""The body of POST /srv/services/profile as profiling items: one `{service, variety?, profile?}`, a list of them
(`{"services": [...]}`), or `{"all": true}` (every container service, variety that runs here and profile),
each with the variety chosen for this host where none was given. Pure: the caller knows the host.
"""

from __future__ import annotations

from typing import Any

from ozwald.config import Settings
from ozwald.provisioner.requests import HostCapabilities, pick_variety
from ozwald.records import UpdateError
from ozwald.state import ProfileRequestBody, validate_profile_request


def profile_items(settings: Settings, body: dict[str, Any], caps: HostCapabilities) -> list[ProfileRequestBody]:
    """The contract's `{service, variety?, profile?}`, `{"services": [...]}` or `{"all": true}`, as items
    with the variety chosen for this host where none was given; UpdateError names a bad item."""
    if "all" in body:
        extra = sorted(set(body) - {"all"})
        if extra:
            raise UpdateError(None, extra[0], "unknown field next to `all`")
        if body["all"] is not True:
            raise UpdateError(None, "all", "`all` must be true")
        items = []
        for service in settings.services:
            if service.type != "container":
                continue
            varieties: list[str | None] = [v for v in service.varieties
                                           if caps.can_run(settings, service, v)[0]] or [None]
            if service.varieties and varieties == [None]:
                continue  # no variety of it runs here
            profiles: list[str | None] = [*service.profiles] or [None]
            for variety in varieties:
                for profile in profiles:
                    items.append(ProfileRequestBody(service=service.name, variety=variety, profile=profile))
        if not items:
            raise UpdateError(None, "all", "no container service of the settings can run on this host")
        return items
    if "services" in body:
        extra = sorted(set(body) - {"services"})
        if extra:
            raise UpdateError(None, extra[0], "unknown field next to `services`")
        listed = body["services"]
        if not isinstance(listed, list) or not listed:
            raise UpdateError(None, "services", "a non-empty list of {name, variety, profile}")
        return [_profile_item(settings, item, index, caps) for index, item in enumerate(listed)]
    return [_profile_item(settings, body, None, caps)]

def _profile_item(settings: Settings, item: Any, index: int | None, caps: HostCapabilities) -> ProfileRequestBody:
    if isinstance(item, dict) and "name" in item:
        item = dict(item)
        name = item.pop("name")
        item.setdefault("service", name)
    try:
        body = validate_profile_request(item, settings)
    except UpdateError as exc:
        raise UpdateError(index, exc.field, exc.message) from None
    service = settings.service(body.service)
    assert service is not None  # validated above
    variety = body.variety
    if variety is None and service.varieties:
        variety, why = pick_variety(settings, service, caps)
        if variety is None:
            raise UpdateError(index, "variety", f"no variety of {service.name!r} can run on this host: {why}")
    elif variety is not None:
        ok, why = caps.can_run(settings, service, variety)
        if not ok:
            raise UpdateError(index, "variety", f"variety {variety!r} of {service.name!r} cannot run here: {why}")
    return body.model_copy(update={"variety": variety})
