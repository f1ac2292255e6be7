# SPDX-License-Identifier: AGPL-3.0-or-later
"""Podman, read through its API socket: images, container state, health and logs."""

from ozwald.podman.inspector import ContainerState, PodmanInspector, PodmanUnavailable

__all__ = ["ContainerState", "PodmanInspector", "PodmanUnavailable"]
