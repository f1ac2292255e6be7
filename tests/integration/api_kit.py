# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the end-to-end tests do with a deployed provisioner's API, from this machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.deploy.guest import ProvisionerDeployment


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition", every: float = 0.1) -> Any:
    """Poll until `check()` is truthy (bounded), returning its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def active(ozwald: ProvisionerDeployment) -> dict[str, dict[str, Any]]:
    status, body = ozwald.request("GET", "/srv/services/active/")
    assert status == 200, body
    return {item["name"]: item for item in body}


def statuses(ozwald: ProvisionerDeployment) -> dict[str, str]:
    return {name: item["status"] for name, item in active(ozwald).items()}


def update(ozwald: ProvisionerDeployment, items: list[dict[str, Any]]) -> dict[str, Any]:
    status, body = ozwald.request("POST", "/srv/services/active/update/", items)
    assert status == 202, body
    return body  # type: ignore[no-any-return]
