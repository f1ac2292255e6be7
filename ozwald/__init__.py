"""Ozwald: a Podman/systemd-native provisioner for AI services."""

__version__ = "0.1.0"
