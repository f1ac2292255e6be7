# SPDX-License-Identifier: AGPL-3.0-or-later
"""Rendering of effective specs into Quadlet `.container` units, gated by Podman version."""

from ozwald.quadlet.render import RenderedUnit, RenderError, render_unit, unit_filename, unit_name

__all__ = ["RenderError", "RenderedUnit", "render_unit", "unit_filename", "unit_name"]
