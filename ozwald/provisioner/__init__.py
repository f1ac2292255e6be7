# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner: desired state, reconciliation through systemd, and what the API serves."""
