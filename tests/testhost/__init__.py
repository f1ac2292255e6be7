# SPDX-License-Identifier: AGPL-3.0-or-later
"""Throwaway systemd + Podman + Quadlet hosts (systemd-nspawn) for Ozwald's integration tests.

See :mod:`tests.testhost.harness` for the machinery, :mod:`tests.testhost.fixtures` for the
pytest fixtures, and ``python -m tests.testhost --help`` for the command line.
"""

from tests.testhost.harness import (
    BUSYBOX_IMAGE,
    IMAGES,
    TESTSERVER_IMAGE,
    TestHost,
    TestHostError,
    build_rootfs,
    cached_rootfs,
    recipe_key,
)

__all__ = [
    "BUSYBOX_IMAGE",
    "IMAGES",
    "TESTSERVER_IMAGE",
    "TestHost",
    "TestHostError",
    "build_rootfs",
    "cached_rootfs",
    "recipe_key",
]
