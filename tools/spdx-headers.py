#!/usr/bin/env python3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""Check (--check) or write (--apply) the SPDX licence header of every source file.

The engine (provisioner, reconciler, CLI, units, packaging) is AGPL-3.0-or-later. The client SDK and the
public interface, which proprietary applications may link or copy, are Apache-2.0: `ozwald/client.py`
(and `ozwald/fleet.py`, its view over several provisioners),
the API models it returns (`ozwald/records.py`, `ozwald/resources/views.py`), the errors it raises
(`ozwald/errors.py`) and
`api/openapi.yaml`. The header is one comment line, after a shebang if there is one:

    # SPDX-License-Identifier: AGPL-3.0-or-later

Files are those git knows (tracked or new, not ignored) with the suffixes or names below.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "AGPL-3.0-or-later"
INTERFACE = "Apache-2.0"
APACHE = {"ozwald/client.py", "ozwald/errors.py", "ozwald/fleet.py", "ozwald/records.py", "ozwald/resources/views.py",
          "api/openapi.yaml"}
# Not .yml: settings files are test fixtures whose line numbers tests check (errors are file:line).
SUFFIXES = {".py", ".sh", ".service", ".target", ".conf", ".yaml", ".spec", ".rpmlintrc", ".toml"}
NAMES = {"Makefile", "rules", "ozwald.postinst", "ozwald.prerm", "ozwald.postrm", "redis-server", "run", "gpu-check"}
SKIP_PREFIXES = ("LICENSES/", "packaging/debian/source/")
HEADER = re.compile(r"^(#|//) SPDX-License-Identifier: (?P<id>\S+)\s*$")


def files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return sorted(f for f in out if f and (ROOT / f).is_file() and not f.startswith(SKIP_PREFIXES)
                  and (Path(f).suffix in SUFFIXES or Path(f).name in NAMES))


def licence_of(path: str) -> str:
    return INTERFACE if path in APACHE else ENGINE


def current(lines: list[str]) -> tuple[int, str] | None:
    for index, line in enumerate(lines[:3]):
        match = HEADER.match(line)
        if match:
            return index, match.group("id")
    return None


def apply(path: str, text: str) -> str:
    lines = text.split("\n")
    wanted = f"# SPDX-License-Identifier: {licence_of(path)}"
    found = current(lines)
    if found is not None:
        lines[found[0]] = wanted
        return "\n".join(lines)
    at = 1 if lines and lines[0].startswith("#!") else 0
    lines.insert(at, wanted)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list files whose header is missing or wrong; exit 1")
    mode.add_argument("--apply", action="store_true", help="add or fix the headers in place")
    args = parser.parse_args(argv)
    bad = []
    for path in files():
        text = (ROOT / path).read_text()
        found = current(text.split("\n"))
        if found is not None and found[1] == licence_of(path):
            continue
        if args.apply:
            (ROOT / path).write_text(apply(path, text))
            print(f"{path}: {licence_of(path)}")
        else:
            bad.append(f"{path}: {'missing' if found is None else found[1]}, want {licence_of(path)}")
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        print(f"{len(bad)} files without the right SPDX header; run tools/spdx-headers.py --apply", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
