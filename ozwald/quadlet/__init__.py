# SPDX-License-Identifier: AGPL-3.0-or-later
"""Rendering of effective specs into Quadlet `.container` units, gated by Podman version; unit naming."""

from ozwald.quadlet.naming import (
    UNIT_PATTERN,
    container_name,
    instance_of_filename,
    instance_of_unit,
    unit_filename,
    unit_label,
    unit_labels,
    unit_name,
)
from ozwald.quadlet.render import RenderedUnit, RenderError, render_unit

__all__ = ["UNIT_PATTERN", "RenderError", "RenderedUnit", "container_name", "instance_of_filename", "instance_of_unit",
           "render_unit", "unit_filename", "unit_label", "unit_labels", "unit_name"]
