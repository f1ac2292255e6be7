# SPDX-License-Identifier: AGPL-3.0-or-later
"""The rendering cases kept as golden files, each also checked by the real Quadlet generator."""

from __future__ import annotations

from pathlib import Path

from ozwald.config import Settings, load_settings, parse_settings, resolve
from ozwald.quadlet import RenderedUnit, render_unit

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
CONTRACT = load_settings(ROOT / "contrib" / "examples" / "contract.yml")
GPU_HEALTH = load_settings(ROOT / "contrib" / "examples" / "gpu-health.yml")

# Values chosen to break naive escaping: directive and section injection, specifiers, variables,
# quotes, backslashes, control characters, and non-ASCII text.
ADVERSARIAL_ENV: dict[str, str] = {
    "NEWLINE_DIRECTIVE": "x\nExecStartPre=/bin/rm -rf /",
    "NEW_SECTION": "x\n[Service]\nUser=root",
    "SPECIFIERS": "%h %n %% %i %",
    "VARIABLES": "$HOME ${HOME} $$ $ ${",
    "QUOTES": "it's \"quoted\" 'twice'",
    "BACKSLASHES": "C:\\path\\ \\n \\x41 \\",
    "CONTROL": "tab\there\rcr\x01\x1b[31m",
    "SPACES": "  leading and trailing  ",
    "UNICODE": "naïve → 模型 🙂",
    "EMPTY": "",
    "SEMICOLON": "a ; b && c | d",
    "TRAILING_BACKSLASH": "end\\",
}
ADVERSARIAL_COMMAND = ["--prompt", "%h $HOME ${X}", "line1\nline2", 'q"uo\'te', "\\", "a;b", "; x", "-"]
ADVERSARIAL_LABELS = {"note": "a\nb=c \"d\" %n $X"}


def adversarial_settings() -> Settings:
    import json

    service = {
        "name": "weird.name_1-x",
        "image": "localhost/ozwald-testserver:latest",
        "environment": ADVERSARIAL_ENV,
        "command": ADVERSARIAL_COMMAND,
        "entrypoint": ["/usr/bin/env", "%n $X"],
        "labels": ADVERSARIAL_LABELS,
        "health": {"command": "test -n \"$HOME\" && echo '%h' > /dev/null", "interval": "5s"},
    }
    return parse_settings(json.dumps({"services": [service]}, ensure_ascii=False))


def cases() -> dict[str, RenderedUnit]:
    """Golden name → rendered unit."""
    out: dict[str, RenderedUnit] = {}
    for variety in ("nvidia", "amdgpu", "cpu-only"):
        for profile in (None, "no-gpu", "fast-gpu"):
            instance = f"qwen-{variety}-{profile or 'base'}"
            out[instance] = render_unit(resolve(CONTRACT, "qwen1.5-vllm", variety, profile), instance)
    out["pinned-gpu-uuid"] = render_unit(resolve(GPU_HEALTH, "qwen1.5-vllm", "nvidia-pinned", "fast-gpu"),
                                         "pinned-gpu-uuid")
    out["pinned-gpu-index"] = render_unit(resolve(GPU_HEALTH, "qwen1.5-vllm", "nvidia-gpu1"), "pinned-gpu-index")
    out["ports-volumes-health"] = render_unit(resolve(GPU_HEALTH, "qwen1.5-vllm", "cpu-only", "no-gpu"),
                                              "ports-volumes-health")
    out["health-command-persistent"] = render_unit(resolve(GPU_HEALTH, "embeddings"), "health-command-persistent")
    out["adversarial"] = render_unit(resolve(adversarial_settings(), "weird.name_1-x"), "weird.name_1-x")
    out["on-demand"] = render_unit(resolve(ON_DEMAND, "chat", None, "persistent"), "on-demand")
    return out


ON_DEMAND = parse_settings("""\
services:
  - name: chat
    image: localhost/ozwald-testserver:latest
    ports: ["0.0.0.0:8090:8000"]
    health: {http: "http://127.0.0.1:8000/health", probe: python3}
    on_demand: {idle_stop: 90s}
    profiles:
      persistent: {persistent: true}
""")


CASES_SETTINGS = {"contract": CONTRACT, "gpu-health": GPU_HEALTH}
