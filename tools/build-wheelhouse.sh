#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-or-later
# Build a wheelhouse that installs Ozwald, offline, into a venv of the TEST HOST's Python.
#
# Why: the integration tests run Ozwald inside the systemd-nspawn test host (Debian 13, CPython 3.13),
# which has no network. This machine (any Python >= 3.11) downloads binary wheels for the guest's
# interpreter and platform instead, and builds the ozwald wheel from the source tree.
#
# - Runtime dependencies: `[project].dependencies` of pyproject.toml, downloaded once per machine into
#   $OZWALD_DEV_CACHE/wheelhouse-<key> (default /var/cache/ozwald-dev), where <key> hashes the
#   dependency list, the target Python version, the platform tags and the architecture. Later runs
#   with the same key are offline and take well under a second. Edit the dependencies and the next
#   run downloads a new entry (old ones stay until removed by hand).
# - Build requirements (`[build-system].requires`, for THIS machine's Python) are cached the same way
#   in build-deps-<key>, so building the ozwald wheel is offline too.
# - The ozwald wheel is built every time (under a second), from a copy of pyproject.toml, README.md
#   and ozwald/ (the source tree is never written to: no build/ or egg-info appears there), and
#   reproducibly: the same sources give the same bytes, which lets the tests cache installed venvs.
# - Caveat: pip evaluates environment markers of dependencies (`; python_version < "3.12"`) against
#   THIS machine's Python, not the guest's. None of Ozwald's dependencies differ between 3.11 and 3.13
#   today; if one ever does, the offline install in the guest fails and names the missing project.
#
# Output: OUT_DIR (default: build/wheelhouse in the repository) is emptied and filled with the cached
# dependency wheels (hard links where possible) and the fresh ozwald wheel. Its absolute path is the
# only thing printed on stdout; progress goes to stderr.
#
# Usage: tools/build-wheelhouse.sh [OUT_DIR]
# Environment: PYTHON (the Python that runs pip; default .venv/bin/python, else python3),
#   OZWALD_GUEST_PYTHON (default 3.13), OZWALD_GUEST_GLIBC (default 2.41, Debian 13),
#   OZWALD_DEV_CACHE (default /var/cache/ozwald-dev; falls back to ~/.cache/ozwald-dev if not writable).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="${1:-$repo/build/wheelhouse}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
guest_python="${OZWALD_GUEST_PYTHON:-3.13}"
guest_glibc="${OZWALD_GUEST_GLIBC:-2.41}"
arch=$(uname -m)

cache_root="${OZWALD_DEV_CACHE:-/var/cache/ozwald-dev}"
if ! mkdir -p "$cache_root" 2>/dev/null || [ ! -w "$cache_root" ]; then
    cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/ozwald-dev"
    mkdir -p "$cache_root"
fi

log() { echo "build-wheelhouse: $*" >&2; }

# Every manylinux tag the guest's glibc accepts, newest first: pip takes --platform values literally
# and would otherwise skip a project whose only wheel is, say, manylinux_2_34.
platforms=()
minor=${guest_glibc#*.}
for ((m = minor; m >= 17; m--)); do platforms+=("manylinux_2_${m}_${arch}"); done
platforms+=("manylinux2014_${arch}" "manylinux2010_${arch}" "manylinux1_${arch}")

# Reads pyproject.toml with this machine's Python (tomllib: 3.11+). Prints the runtime dependencies,
# one per line, then "--", then the build requirements.
requirements=$("$PYTHON" - "$repo/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
print("\n".join(data["project"].get("dependencies", [])))
print("--")
print("\n".join(data.get("build-system", {}).get("requires", ["setuptools", "wheel"])))
EOF
)
runtime_deps=$(sed '/^--$/,$d' <<<"$requirements")
build_deps=$(sed '1,/^--$/d' <<<"$requirements")
host_python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

key_of() { sha256sum | cut -c1-16; }
runtime_key=$(printf '%s\n' "runtime-v1" "$guest_python" "$arch" "${platforms[*]}" "$runtime_deps" | key_of)
build_key=$(printf '%s\n' "build-v1" "$host_python" "$build_deps" | key_of)

# fill DIR KIND PIP-ARGS...: download into DIR once, under a lock, atomically (a killed run leaves
# only a .tmp- directory, removed by the next run that takes the lock).
fill() {
    local dest="$1" kind="$2"
    shift 2
    if [ -f "$dest/.complete" ]; then
        return 0
    fi
    exec {lock}>"$dest.lock"
    flock "$lock"
    if [ ! -f "$dest/.complete" ]; then
        rm -rf "$dest" "$dest".tmp-*
        local tmp
        tmp=$(mktemp -d "$dest.tmp-XXXXXX")
        local started=$SECONDS
        log "downloading $kind wheels into $dest"
        if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --dest "$tmp" "$@" >&2; then
            rm -rf "$tmp"
            exec {lock}>&-
            log "pip download failed"
            return 1
        fi
        (cd "$tmp" && ls -1 ./*.whl | sed 's|^\./||' >.complete)
        chmod 755 "$tmp"
        mv "$tmp" "$dest"
        log "downloaded $(wc -l <"$dest/.complete") $kind wheels in $((SECONDS - started)) s"
    fi
    exec {lock}>&-
}

runtime_dir="$cache_root/wheelhouse-$runtime_key"
mapfile -t runtime_args <<<"$runtime_deps"
platform_args=()
for p in "${platforms[@]}"; do platform_args+=(--platform "$p"); done
fill "$runtime_dir" runtime --python-version "$guest_python" --implementation cp "${platform_args[@]}" \
    "${runtime_args[@]}"

build_dir="$cache_root/build-deps-$build_key"
mapfile -t build_args <<<"$build_deps"
fill "$build_dir" build "${build_args[@]}"
# The build requirements installed once (pip --target) next to their wheels: the ozwald wheel is
# then built by calling the PEP 517 backend directly, several times faster than `pip wheel`, which
# makes a fresh isolated environment on every call.
if [ ! -f "$build_dir/site/.complete" ]; then
    exec {lock}>"$build_dir.lock"
    flock "$lock"
    if [ ! -f "$build_dir/site/.complete" ]; then
        rm -rf "$build_dir/site" "$build_dir"/site.tmp-*
        site_tmp=$(mktemp -d "$build_dir/site.tmp-XXXXXX")
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$build_dir" \
            --target "$site_tmp" "${build_args[@]}" >&2
        touch "$site_tmp/.complete"
        mv "$site_tmp" "$build_dir/site"
    fi
    exec {lock}>&-
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src" "$stage/dist"
cp "$repo/pyproject.toml" "$repo/README.md" "$stage/src/"
if [ -f "$repo/LICENSE" ]; then cp "$repo/LICENSE" "$stage/src/"; fi
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - ozwald | tar -C "$stage/src" -xf -

# PEP 517: import the backend named in pyproject.toml and call build_wheel. Its chatter (setuptools
# lists every file it copies, plus deprecation notices) is shown only when the build fails.
cat >"$stage/build.py" <<'EOF'
import importlib, sys, tomllib
with open("pyproject.toml", "rb") as f:
    name = tomllib.load(f).get("build-system", {}).get("build-backend", "setuptools.build_meta:__legacy__")
module, _, attr = name.partition(":")
backend = importlib.import_module(module)
for part in filter(None, attr.split(".")):
    backend = getattr(backend, part)
print(backend.build_wheel(sys.argv[1]))
EOF
started=$SECONDS
# SOURCE_DATE_EPOCH makes the wheel reproducible (same sources, same bytes), so that the tests can
# cache the venv installed from it (tests/deploy/guest.py).
if ! (cd "$stage/src" && PYTHONPATH="$build_dir/site" PYTHONDONTWRITEBYTECODE=1 SOURCE_DATE_EPOCH=315532800 \
    "$PYTHON" "$stage/build.py" "$stage/dist" >"$stage/build.log" 2>&1); then
    cat "$stage/build.log" >&2
    log "building the ozwald wheel failed"
    exit 1
fi

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
cp "$stage"/dist/*.whl "$out/"
log "built $(cd "$stage/dist" && echo *.whl) in $((SECONDS - started)) s"
while read -r wheel; do
    ln "$runtime_dir/$wheel" "$out/$wheel" 2>/dev/null || cp "$runtime_dir/$wheel" "$out/$wheel"
done <"$runtime_dir/.complete"
echo "$out"
