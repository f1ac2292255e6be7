"""The provisioner: desired state, reconciliation through systemd, and what the API serves."""
