#!/usr/bin/env bash
# SPDX-License-Identifier: AGPL-3.0-or-later
# Build Ozwald's Debian package and RPM from this tree, then lint both (lintian, rpmlint). Output in dist/.
#   tools/build-packages.sh [deb|rpm|all]    (default all)
# Needs (tools/install-system-deps.sh installs them): debhelper, dh-python, pybuild-plugin-pyproject,
# python3-all, python3-setuptools, python3-wheel, python3-pip, lintian, rpm, rpmlint.
set -euo pipefail
# The distro's Python and tools only (a pyenv or venv python3 on PATH has none of dh-python's modules).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
what=${1:-all}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' ozwald/__init__.py)
out=$root/dist
work=$root/build/packages
rm -rf "$work"
mkdir -p "$work" "$out"
src=$work/ozwald-$version
mkdir -p "$src"
# The tree as git sees it (tracked and new files, nothing ignored), so a build never picks up a venv.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$src"
# pyproject.toml states its licence as PEP 639 has it (an SPDX `license` string and `license-files`), which
# setuptools reads from 77 on; Debian 13's has 78. A build host with an older one (Debian 12's 66) builds
# from the older spelling of the same metadata, written into the build tree only.
if ! /usr/bin/python3 -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)'; then
    /usr/bin/python3 - "$src/pyproject.toml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
text = re.sub(r'^license = "([^"]+)"(.*)$', r'license = { text = "\1" }', text, count=1, flags=re.M)
files = re.search(r'^license-files = (.*)\n', text, flags=re.M)
text = text.replace(files.group(0), "")
text = re.sub(r'"setuptools>=77"', '"setuptools"', text)
text += f"\n[tool.setuptools]\nlicense-files = {files.group(1)}\n"
open(path, "w", encoding="utf-8").write(text)
PY
fi
tar -C "$work" -czf "$work/ozwald-$version.tar.gz" "ozwald-$version"

if [ "$what" = all ] || [ "$what" = deb ]; then
    cp -a packaging/debian "$src/debian"
    start=$SECONDS
    (cd "$src" && dpkg-buildpackage -us -uc -b >"$work/dpkg-buildpackage.log" 2>&1) || {
        tail -40 "$work/dpkg-buildpackage.log"; echo "dpkg-buildpackage failed (log: $work/dpkg-buildpackage.log)"; exit 1; }
    deb=$(ls "$work"/ozwald_"$version"*_all.deb)
    cp "$deb" "$out/"
    echo "built $out/$(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in $((SECONDS - start)) s"
    # Errors fail the build; warnings are shown. The overrides (packaging/debian/ozwald.lintian-overrides)
    # say why each is accepted.
    lintian --fail-on error --info "$out/$(basename "$deb")"
    echo "lintian: no errors"
fi

if [ "$what" = all ] || [ "$what" = rpm ]; then
    top=$work/rpm
    mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}
    cp "$work/ozwald-$version.tar.gz" "$top/SOURCES/"
    rpmbuild -bb --define "_topdir $top" --nodeps packaging/rpm/ozwald.spec >"$work/rpmbuild.log" 2>&1 || {
        tail -40 "$work/rpmbuild.log"; echo "rpmbuild failed (log: $work/rpmbuild.log)"; exit 1; }
    rpm=$(ls "$top"/RPMS/noarch/ozwald-"$version"-*.noarch.rpm)
    cp "$rpm" "$out/"
    echo "built $out/$(basename "$rpm") ($(du -k "$rpm" | cut -f1) KiB)"
    rpm -qpR "$out/$(basename "$rpm")" > "$work/rpm-requires.txt"
    rpm -qpl "$out/$(basename "$rpm")" > "$work/rpm-files.txt"
    rpmlint -r packaging/rpm/ozwald.rpmlintrc "$out/$(basename "$rpm")" | tee "$work/rpmlint.log"
    if grep -q ' E: ' "$work/rpmlint.log"; then echo "rpmlint: errors"; exit 1; fi
    echo "rpmlint: no errors"
fi
