"""Demo of Ozwald's main job, for a newcomer: `make demo`.

As root (the normal case on a fresh machine), it boots a throwaway systemd + Podman host, installs
Ozwald in it as its systemd service, and plays an orchestrator against the HTTP API:

1. shows the Quadlet unit Ozwald renders for a service;
2. posts a desired set: a stand-in for vLLM (an OpenAI-compatible test server) and one that cannot start;
3. follows the statuses (starting → available, and failed with the reason), then asks the model;
4. previews a profile change (the plan endpoint), applies it, and sees the container restarted;
5. removes everything and tears the host down.

Without root it only renders the unit and shows what systemd would run, through Podman's generator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ozwald.config import load_settings, parse_settings, resolve  # noqa: E402
from ozwald.quadlet import render_unit  # noqa: E402

SERVICES = """\
  - name: qwen1.5-vllm
    description: stand-in for vLLM serving DeepSeek Qwen 1.5B (an OpenAI-compatible test server)
    image: localhost/ozwald-testserver:latest
    ports: ["8080:8000"]
    health: {http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}
    environment: {MODEL_NAME: deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
    varieties:
      nvidia: {environment: {GPU: "true"}}
      cpu-only: {environment: {GPU: "false"}}
    profiles:
      no-gpu: {environment: {MAX_MODEL_LEN: "45000"}}
      fast-gpu: {environment: {GPU_MEMORY_UTILIZATION: "0.9"}}
  - name: embeddings
    description: an embedding server whose model file is missing (it exits at once)
    image: localhost/ozwald-testserver:latest
    restart: "no"
    environment: {EXIT_CODE: "3"}
"""


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def render_only() -> int:
    settings_path = ROOT / "contrib" / "examples" / "contract.yml"
    settings = load_settings(settings_path)
    unit = render_unit(resolve(settings, "qwen1.5-vllm", "nvidia", "fast-gpu"), "qwen1.5-vllm")
    say(f"{unit.filename} for qwen1.5-vllm, variety nvidia, profile fast-gpu ({settings_path.relative_to(ROOT)})")
    print(unit.text)
    quadlet = subprocess.run([str(ROOT / "tools" / "fetch-quadlet.sh")], check=True, capture_output=True,
                             text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / unit.filename).write_text(unit.text)
        out = subprocess.run([quadlet, "-dryrun"], env={**os.environ, "QUADLET_UNIT_DIRS": tmp},
                             capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    exec_start = next(line for line in out.stdout.splitlines() if line.startswith("ExecStart="))
    say(f"what systemd will run for {unit.unit_name} (from Podman's own Quadlet generator)")
    print(exec_start.removeprefix("ExecStart="))
    print("\n(run `make demo` as root to see Ozwald provision real containers in a throwaway systemd host)")
    return 0


def show(items: list[dict[str, Any]]) -> None:
    for item in items:
        reason = item["info"].get("reason")
        print(f"  {item['name']:<14} {item['status']:<10} variety={item['variety']} profile={item['profile']}"
              + (f"\n  {'':<14} reason: {reason}" if reason else ""))


def full_demo() -> int:
    from tests.deploy.guest import ProvisionerDeployment, VenvInstaller, build_wheelhouse, dev_cache_root
    from tests.testhost.harness import TestHost

    say("building (first time only) and booting a throwaway Debian 13 host with systemd 257 and Podman 5.4")
    with tempfile.TemporaryDirectory() as tmp, TestHost() as host:
        print(f"  host {host.name} at {host.ip}, booted in {host.timings.get('boot_s', 0):.2f} s")
        say("installing Ozwald into it as ozwald.service (venv from this source tree), with Redis")
        installer = VenvInstaller(build_wheelhouse(Path(tmp) / "wheels"), cache_dir=dev_cache_root() / "venvs")
        ozwald = ProvisionerDeployment(host, installer).install()
        ozwald.write_config(ozwald.default_config(SERVICES))
        ozwald.start()
        print(f"  GET {ozwald.url('/health')} -> {ozwald.health()}")

        settings = parse_settings("services:\n" + SERVICES)
        unit = render_unit(resolve(settings, "qwen1.5-vllm", "cpu-only", "no-gpu"), "qwen1.5-vllm")
        say("the Quadlet unit Ozwald writes for qwen1.5-vllm (cpu-only, no-gpu)")
        print(unit.text)

        desired = [{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}, {"name": "embeddings"}]
        say(f"POST /srv/services/active/update/ {json.dumps(desired)}")
        print(" ", ozwald.request("POST", "/srv/services/active/update/", desired)[1])
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            items = ozwald.request("GET", "/srv/services/active/")[1]
            now = {i["name"]: i["status"] for i in items}
            if now != seen:
                print(f"  t={90 - (deadline - time.monotonic()):5.2f} s  {now}")
                seen = now
            if now.get("qwen1.5-vllm") == "available" and now.get("embeddings") == "failed":
                break
            time.sleep(0.05)
        say("GET /srv/services/active/")
        show(ozwald.request("GET", "/srv/services/active/")[1])

        say("asking the served model, from the orchestrator's side")
        request = urllib.request.Request(host.url(8080, "/v1/completions"),
                                         data=json.dumps({"model": "x", "prompt": "Hello, Ozwald"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
        print(f"  model {answer['model']} answered: {answer['choices'][0]['text']!r}")

        change = [{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "fast-gpu"}]
        say(f"POST /srv/services/active/plan/ {json.dumps(change)}  (dry run)")
        for entry in ozwald.request("POST", "/srv/services/active/plan/", change)[1]:
            print(f"  {entry['name']:<14} {entry['action']:<8} {entry['reason']}")
        ozwald.request("POST", "/srv/services/active/update/", change)
        while True:
            items = {i["name"]: i for i in ozwald.request("GET", "/srv/services/active/")[1]}
            qwen = items.get("qwen1.5-vllm")
            if qwen and qwen["profile"] == "fast-gpu" and qwen["status"] == "available" and len(items) == 1:
                break
            time.sleep(0.05)
        with urllib.request.urlopen(host.url(8080, "/env"), timeout=5) as response:
            env = json.loads(response.read())
        print(f"  applied: GPU_MEMORY_UTILIZATION={env.get('GPU_MEMORY_UTILIZATION')}, "
              f"MAX_MODEL_LEN={env.get('MAX_MODEL_LEN', '(unset)')}; embeddings was stopped (not in the set)")

        say("POST /srv/services/active/update/ []  (stop everything)")
        ozwald.request("POST", "/srv/services/active/update/", [])
        while ozwald.request("GET", "/srv/services/active/")[1]:
            time.sleep(0.05)
        print("  no active services; tearing the host down")
        ozwald.stop()
    return 0


def main() -> int:
    if os.geteuid() != 0:
        return render_only()
    return full_demo()


if __name__ == "__main__":
    sys.exit(main())
