"""Demo of Ozwald's main job, for a newcomer: `make demo`.

It loads the contract's example settings, resolves a service in one variety and profile, renders the
Quadlet unit, and asks Podman's real Quadlet generator what `podman run` command systemd would execute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ozwald.config import load_settings, resolve
from ozwald.quadlet import render_unit

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    settings_path = ROOT / "contrib" / "examples" / "contract.yml"
    settings = load_settings(settings_path)
    print(f"== settings: {settings_path.relative_to(ROOT)}")
    spec = resolve(settings, "qwen1.5-vllm", "nvidia", "fast-gpu")
    unit = render_unit(spec, "qwen1.5-vllm")
    print(f"== {unit.filename} (qwen1.5-vllm, variety nvidia, profile fast-gpu)\n")
    print(unit.text)
    quadlet = subprocess.run(
        [str(ROOT / "tools" / "fetch-quadlet.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / unit.filename).write_text(unit.text)
        out = subprocess.run(
            [quadlet, "-dryrun"], env={**os.environ, "QUADLET_UNIT_DIRS": tmp}, capture_output=True, text=True
        )
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    exec_start = next(line for line in out.stdout.splitlines() if line.startswith("ExecStart="))
    print(f"== what systemd will run for {unit.unit_name} (from Podman's own Quadlet generator)\n")
    print(exec_start.removeprefix("ExecStart="))
    return 0


if __name__ == "__main__":
    sys.exit(main())
