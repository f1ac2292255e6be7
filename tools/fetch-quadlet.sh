#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-or-later
# Fetch Podman's Quadlet generator from Debian 13's podman .deb without installing any trixie package.
# Why: the tests check every rendered unit with the real generator (`quadlet -dryrun`), and Debian 12's
# podman ships none. The binary needs only libc. It is cached per machine, so later runs are offline.
# Prints the absolute path of the quadlet binary on stdout.
set -euo pipefail

suite="${OZWALD_QUADLET_SUITE:-trixie}"
cache_root="${OZWALD_DEV_CACHE:-/var/cache/ozwald-dev}"
if ! mkdir -p "$cache_root" 2>/dev/null || [ ! -w "$cache_root" ]; then
    cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/ozwald-dev"
    mkdir -p "$cache_root"
fi
dest="$cache_root/quadlet-$suite"
if [ -x "$dest/quadlet" ]; then
    echo "$dest/quadlet"
    exit 0
fi

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
fi
mirror="${mirror:-http://deb.debian.org/debian}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$work/sources.list"
apt_opts=(
    -o "Dir::Etc::sourcelist=$work/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::Archives=$work/archives"
    -o "APT::Get::List-Cleanup=0"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download podman >&2)
deb=$(ls "$work"/debs/podman_*.deb)
dpkg-deb -x "$deb" "$work/x"
bin="$work/x/usr/libexec/podman/quadlet"
[ -x "$bin" ] || { echo "quadlet binary not found in $deb" >&2; exit 1; }
mkdir -p "$dest.tmp"
cp "$bin" "$dest.tmp/quadlet"
basename "$deb" > "$dest.tmp/SOURCE"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest/quadlet"
