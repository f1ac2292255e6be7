#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-or-later
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
# prometheus: promtool checks the exposition (tests/provisioner/test_metrics.py), and the server scrapes a
# provisioner in a test host (tests/integration/test_prometheus.py)
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends prometheus
fi
# Package builds (tools/build-packages.sh): Debian's tools for the .deb, Debian's rpm and rpmlint for the RPM.
# The distro's python3 modules because dpkg-buildpackage and rpmbuild use /usr/bin/python3.
PKG_TOOLS="debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel python3-build python3-installer lintian rpm rpmlint fakeroot"
missing=""
for pkg in $PKG_TOOLS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
fi
