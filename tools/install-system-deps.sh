#!/usr/bin/env bash
# Install the Debian packages Ozwald's tests need on the machine that runs them. Idempotent and quiet:
# apt-get update runs only when a package is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/install-testhost-deps.sh" ]; then
    "$here/install-testhost-deps.sh"
fi
