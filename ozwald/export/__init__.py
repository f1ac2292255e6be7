# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's services exported for other engines: pure functions from settings to their objects."""
