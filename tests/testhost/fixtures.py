# SPDX-License-Identifier: AGPL-3.0-or-later
"""pytest fixtures for tests that need a real systemd + Podman host.

Registered by ``tests/conftest.py`` with ``pytest_plugins = ["tests.testhost.fixtures"]``.

- ``testhost``: one booted :class:`~tests.testhost.harness.TestHost` per test module. A module
  shares it because a boot plus copy costs one to two seconds; tests in a module should clean up
  the units they create (or use unique unit names).
- ``testhost_factory``: call it to boot more hosts within one test (each call boots another);
  they are all stopped when the test ends.
- ``testhost_rootfs``: the cached guest tree (built once per machine, then reused).

Tests using these fixtures get the ``testhost`` marker automatically, so ``-m "not testhost"``
deselects them. They are skipped only when not running as root; CI runs as root, and a failed
build or boot there is an error, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.testhost.harness import TestHost, build_rootfs

FIXTURES = ("testhost", "testhost_factory", "testhost_rootfs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a test-host fixture, directly or through other fixtures."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in FIXTURES):
            item.add_marker(pytest.mark.testhost)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("test host needs root (systemd-nspawn, veth pairs, cgroups); run the suite as root")


@pytest.fixture(scope="session")
def testhost_rootfs() -> Path:
    """The cached guest tree; building it (about a minute, once per machine) happens here."""
    _require_root()
    return build_rootfs()


@pytest.fixture(scope="module")
def testhost(testhost_rootfs: Path) -> Iterator[TestHost]:
    """A freshly booted host shared by the tests of one module."""
    with TestHost(testhost_rootfs) as host:
        yield host


@pytest.fixture
def testhost_factory(testhost_rootfs: Path) -> Iterator[Callable[[], TestHost]]:
    """Boot extra hosts on demand; every host booted through it is stopped after the test."""
    hosts: list[TestHost] = []

    def boot() -> TestHost:
        host = TestHost(testhost_rootfs)
        host.start()
        hosts.append(host)
        return host

    yield boot
    errors: list[BaseException] = []
    for host in reversed(hosts):
        try:
            host.stop()
        except Exception as err:
            errors.append(err)
    if errors:
        raise errors[0]
