# SPDX-License-Identifier: AGPL-3.0-or-later
"""The published artefacts (issue 10, section 5): `make dist` builds the wheel and the sdist; a fresh venv
with only the wheel installed (its dependencies from the index, nothing from this tree) can import
`ozwald.client` and talk to a running provisioner API."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ozwald.api import create_server
from tests.api.conftest import API_KEY, FakeCore

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"

CLIENT_SCRIPT = """
import json, sys
from ozwald.client import OzwaldClient
client = OzwaldClient(sys.argv[1], sys.argv[2])
client.update([{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}])
print(json.dumps({"health": client.health(), "active": [s.name for s in client.active_services()],
                  "file": __import__("ozwald.client").client.__file__}))
"""


def artefact(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    if not found:
        pytest.fail(f"no {pattern} in {DIST}: run `make dist` (make test does)")
    return found[-1]


def test_wheel_and_sdist_carry_code_licences_and_metadata() -> None:
    wheel, sdist = artefact("ozwald-*-py3-none-any.whl"), artefact("ozwald-*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "ozwald/client.py" in names and "ozwald/cli/__init__.py" in names and "ozwald/errors.py" in names
    assert any(n.endswith("licenses/LICENSES/Apache-2.0.txt") or n.endswith("/Apache-2.0.txt") for n in names)
    assert "License-Expression: AGPL-3.0-or-later AND Apache-2.0\n" in metadata  # PEP 639
    assert "Classifier: License ::" not in metadata  # deprecated next to an expression
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert any(m.endswith("/LICENSE") for m in members) and any(m.endswith("/pyproject.toml") for m in members)


def test_the_build_warns_of_nothing_deprecated(tmp_path: Path) -> None:
    """setuptools warned that a licence table and licence classifiers stop building after 2027-02-18."""
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    output = built.stdout + built.stderr
    assert "Deprecat" not in output and "deprecat" not in output, output[-4000:]


def test_fresh_venv_with_only_the_wheel_talks_to_a_provisioner(tmp_path: Path) -> None:
    wheel = artefact("ozwald-*-py3-none-any.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    server = create_server(FakeCore(), API_KEY, host="127.0.0.1", port=0)
    server.start()
    try:
        out = subprocess.run([str(venv / "bin" / "python"), "-c", CLIENT_SCRIPT, server.url, API_KEY],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["health"]["status"] == "healthy"
    assert result["active"] == ["qwen1.5-vllm"]
    assert str(venv) in result["file"]  # the installed wheel, not this tree
