# SPDX-License-Identifier: AGPL-3.0-or-later
"""Podman, read through its API socket: images, container state, health and logs; and its version."""

from ozwald.podman.inspector import ContainerState, PodmanInspector, PodmanUnavailable
from ozwald.podman.version import PODMAN_SOCKET_ENV, detect_podman_version, podman_version

__all__ = ["PODMAN_SOCKET_ENV", "ContainerState", "PodmanInspector", "PodmanUnavailable", "detect_podman_version",
           "podman_version"]
