# SPDX-License-Identifier: AGPL-3.0-or-later
"""Run Podman's real Quadlet generator in dry-run mode on rendered units."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support.systemd_exec import exec_argv

ROOT = Path(__file__).resolve().parents[2]
QUADLET_SPECIFIERS = frozenset({"%t", "%N", "%n"})


@cache
def quadlet_binary() -> str:
    configured = os.environ.get("OZWALD_QUADLET")
    if configured:
        return configured
    out = subprocess.run([str(ROOT / "tools" / "fetch-quadlet.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@dataclass
class DryRun:
    returncode: int
    stdout: str
    stderr: str

    def units(self) -> dict[str, str]:
        """Generated service units by name."""
        result: dict[str, str] = {}
        name = None
        lines: list[str] = []
        for line in self.stdout.split("\n"):
            if line.startswith("---") and line.endswith("---") and len(line) > 6:
                if name is not None:
                    result[name] = "\n".join(lines)
                name = line.strip("-")
                lines = []
            else:
                lines.append(line)
        if name is not None:
            result[name] = "\n".join(lines)
        return result

    def exec_start(self, unit: str) -> list[str]:
        for line in self.units()[unit].split("\n"):
            if line.startswith("ExecStart="):
                return exec_argv(line[len("ExecStart="):], QUADLET_SPECIFIERS)
        raise AssertionError(f"no ExecStart in {unit}")


def dryrun(files: dict[str, str]) -> DryRun:
    """Write `files` (name → text) into a fresh directory and run `quadlet -dryrun` on it."""
    with tempfile.TemporaryDirectory(prefix="ozwald-quadlet-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        proc = subprocess.run([quadlet_binary(), "-dryrun"], env={**os.environ, "QUADLET_UNIT_DIRS": tmp},
                              capture_output=True, text=True, timeout=60)
    return DryRun(proc.returncode, proc.stdout, proc.stderr)


def podman_run_args(argv: list[str]) -> dict[str, list[str]]:
    """Group `podman run` options that Ozwald sets: --env, --device, --publish, -v, --label."""
    groups: dict[str, list[str]] = {"--env": [], "--device": [], "--publish": [], "-v": [], "--label": []}
    i = argv.index("run") + 1
    while i < len(argv):
        arg = argv[i]
        if arg in groups:
            groups[arg].append(argv[i + 1])
            i += 2
        else:
            i += 1
    return groups
