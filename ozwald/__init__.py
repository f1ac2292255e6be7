# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald: a Podman/systemd-native provisioner for AI services."""

__version__ = "0.1.0"
