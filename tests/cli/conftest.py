# SPDX-License-Identifier: AGPL-3.0-or-later
"""The CLI's actions run in-process against the real API server in front of a fake core."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ozwald.api import ApiServer, create_server
from ozwald.records import ActiveService, ServiceInfo
from tests.api.conftest import API_KEY, FakeCore


class SettlingCore(FakeCore):
    """Statuses follow the desired set: `broken` fails with a reason, `slow` stays starting, an instance given a
    status with `set_status` has that one, everything else is available."""

    def active_services(self) -> list[ActiveService]:
        with self.lock:
            desired = self.desired
            given = dict(self.status_of)
        out = []
        for i in desired.instances:
            status = given.get(i.name) or ("failed" if i.name == "broken" else "starting" if i.name == "slow"
                                           else "available")
            info: dict[str, Any] = {"unit": f"ozwald-{i.name}.service", "generation": desired.generation}
            if status == "failed":
                info["reason"] = "image localhost/nope:latest not found"
            out.append(ActiveService(name=i.name, service=i.service, variety=i.variety, profile=i.profile,
                                     status=status, info=ServiceInfo.model_validate(info)))
        return out


@pytest.fixture
def core() -> SettlingCore:
    core = SettlingCore(strict_services=False)
    return core


@pytest.fixture
def served(core: SettlingCore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ApiServer]:
    server = create_server(core, API_KEY, host="127.0.0.1", port=0)
    server.start()
    monkeypatch.setenv("OZWALD_BASE", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("OZWALD_SYSTEM_KEY", API_KEY)
    monkeypatch.setenv("OZWALD_ENV_FILE", str(tmp_path / "absent.env"))
    try:
        yield server
    finally:
        server.close()


