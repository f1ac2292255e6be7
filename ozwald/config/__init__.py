# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's settings: the YAML model, its loader with precise errors, and spec resolution."""

from ozwald.config.errors import ConfigError, ConfigIssue, ResolveError
from ozwald.config.loader import find_config_path, load_settings, parse_settings
from ozwald.config.model import Service, Settings
from ozwald.config.resolve import EffectiveSpec, resolve

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "EffectiveSpec",
    "ResolveError",
    "Service",
    "Settings",
    "find_config_path",
    "load_settings",
    "parse_settings",
    "resolve",
]
