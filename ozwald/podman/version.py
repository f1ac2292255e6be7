# SPDX-License-Identifier: AGPL-3.0-or-later
"""Which Podman is installed, so rendered units never carry a key it would reject."""

from __future__ import annotations

import logging
import subprocess

from ozwald.podman.inspector import PodmanInspector, PodmanUnavailable
from ozwald.quadlet.keys import NEWEST_KNOWN, Version, format_version, parse_version

log = logging.getLogger(__name__)
PODMAN_SOCKET_ENV = "OZWALD_PODMAN_SOCKET"  # the Podman API socket, when not the default


def detect_podman_version(podman: PodmanInspector) -> Version | None:
    """The installed Podman, from its API, else from `podman --version`; None when neither answers."""
    try:
        return parse_version(podman.version())
    except (PodmanUnavailable, ValueError):
        pass
    try:
        out = subprocess.run(["podman", "--version"], capture_output=True, text=True, timeout=10, check=True)
        return parse_version(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def podman_version(podman: PodmanInspector) -> Version:
    """The installed Podman, so units never carry a key it would reject; the newest known as a fallback."""
    version = detect_podman_version(podman)
    if version is None:
        log.warning("cannot tell the Podman version; rendering for Podman %s", format_version(NEWEST_KNOWN))
        return NEWEST_KNOWN
    return version
