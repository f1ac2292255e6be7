#!/usr/bin/env bash
# Install the Debian packages Ozwald's tests need on the machine that runs them. Idempotent and quiet:
# apt-get update runs only when a package is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/install-testhost-deps.sh" ]; then
    "$here/install-testhost-deps.sh"
fi
# redis-server: tests/state start their own instances on free loopback ports
if ! command -v redis-server >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends redis-server
fi
