#!/bin/sh
# SPDX-License-Identifier: AGPL-3.0-or-later
# Install what the test-host harness (tests/testhost) needs on the machine that runs the tests.
#
# Idempotent: installs only missing packages, and runs `apt-get update` only if something is
# missing. Works on Debian 12 (bookworm) and 13 (trixie); the package names are the same on both.
# Waits for a dpkg lock held by another apt run instead of failing.
#
#   debootstrap            builds the Debian 13 guest tree
#   debian-archive-keyring verifies it (bookworm's keyring already carries trixie's keys)
#   systemd-container      systemd-nspawn, which boots the guest
#   systemd                systemd-machine-id-setup, systemd-run
#   iproute2               ip, to address the veth pair
#   util-linux             nsenter, to enter the guest
#   coreutils, tar         cp -a of the cached tree
#   ca-certificates        in case the configured mirror is https
set -eu

PACKAGES="debootstrap debian-archive-keyring systemd-container systemd iproute2 util-linux coreutils tar ca-certificates"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-testhost-deps: must run as root" >&2
    exit 1
fi
if [ ! -r /etc/debian_version ]; then
    echo "install-testhost-deps: this is not Debian; install the equivalents of: $PACKAGES" >&2
    exit 1
fi

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "install-testhost-deps: all present ($PACKAGES)"
    exit 0
fi

echo "install-testhost-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Another apt/dpkg run may hold the locks (e.g. a provisioning step still running): wait for it.
LOCK_WAIT="-o DPkg::Lock::Timeout=600"
# shellcheck disable=SC2086 # word splitting of the option and package lists is intended
apt-get $LOCK_WAIT update -q
# shellcheck disable=SC2086
apt-get $LOCK_WAIT install -y -q --no-install-recommends $missing
echo "install-testhost-deps: done"
