# SPDX-License-Identifier: AGPL-3.0-or-later
"""pytest fixtures that deploy Ozwald into test hosts as ``ozwald.service``.

Register with ``pytest_plugins = ["tests.testhost.fixtures", "tests.deploy.fixtures"]`` (the test-host
fixtures are needed too).

- ``ozwald_wheelhouse`` (session): the wheelhouse from ``tools/build-wheelhouse.sh`` (dependency
  wheels cached per machine, the ozwald wheel built from this source tree once per session).
- ``ozwald_venv`` (session): the :class:`~tests.deploy.guest.VenvInstaller`; the venv is built in a
  guest once per version of the sources and unpacked from /var/cache/ozwald-dev/venvs otherwise.
- ``ozwald_deploy`` (function): a factory, ``ozwald_deploy(host, config=None, **options)``, that installs
  Ozwald into a booted host (not started) and returns its
  :class:`~tests.deploy.guest.ProvisionerDeployment`; services it installed are stopped afterwards
  when their host still runs.
- ``ozwald_deployment`` (module): Ozwald installed, not started, in the module's ``testhost`` with the
  default settings (one provisioner named after the host, the local Redis, no services).

They depend on ``testhost_rootfs``, so tests using them are marked ``testhost`` and skipped when not
running as root, like the test-host fixtures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from tests.deploy.guest import UNIT, ProvisionerDeployment, VenvInstaller, build_wheelhouse, dev_cache_root
from tests.testhost.harness import TestHost


class Deploy(Protocol):
    """The ``ozwald_deploy`` factory."""

    def __call__(
        self,
        host: TestHost,
        config: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        serve_args: Sequence[str] | None = None,
        provisioner: str | None = None,
        system_key: str | None = None,
        redis_password: str | None = None,
        api_port: int = ...,
    ) -> ProvisionerDeployment: ...


@pytest.fixture(scope="session")
def ozwald_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels for the guest's CPython 3.13: dependencies (cached per machine) and ozwald (fresh)."""
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="session")
def ozwald_venv(ozwald_wheelhouse: Path, testhost_rootfs: Path) -> VenvInstaller:
    """Installs /opt/ozwald/venv into guests: built in a guest (about 5 s) when the sources changed,
    else unpacked from the per-machine cache (about 0.1 s)."""
    return VenvInstaller(ozwald_wheelhouse, cache_dir=dev_cache_root() / "venvs")


def _stop_quietly(deployment: ProvisionerDeployment) -> None:
    host = deployment.host
    if host.running:
        with contextlib.suppress(Exception):
            host.systemctl("stop", UNIT, check=False)
            host.systemctl("reset-failed", UNIT, check=False)


@pytest.fixture
def ozwald_deploy(ozwald_venv: VenvInstaller) -> Iterator[Deploy]:
    """``ozwald_deploy(host, config=None, **options)``: install Ozwald into a booted host (not started)."""
    deployments: list[ProvisionerDeployment] = []

    def deploy(
        host: TestHost,
        config: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        serve_args: Sequence[str] | None = None,
        provisioner: str | None = None,
        system_key: str | None = None,
        redis_password: str | None = None,
        api_port: int = 8000,
    ) -> ProvisionerDeployment:
        deployment = ProvisionerDeployment(
            host,
            ozwald_venv,
            provisioner=provisioner,
            system_key=system_key,
            redis_password=redis_password,
            api_port=api_port,
        )
        deployments.append(deployment)
        return deployment.install(config, env=env, serve_args=serve_args)

    yield deploy
    for deployment in reversed(deployments):
        _stop_quietly(deployment)


@pytest.fixture(scope="module")
def ozwald_deployment(testhost: TestHost, ozwald_venv: VenvInstaller) -> Iterator[ProvisionerDeployment]:
    """Ozwald installed (not started) in the module's test host, with the default settings."""
    deployment = ProvisionerDeployment(testhost, ozwald_venv).install()
    yield deployment
    _stop_quietly(deployment)
