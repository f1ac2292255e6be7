# SPDX-License-Identifier: AGPL-3.0-or-later
"""Demo of Ozwald's main job, for a newcomer: `make demo`.

As root (the normal case on a fresh machine), it boots a throwaway systemd + Podman host, installs
Ozwald's Debian package in it (`make demo` builds it first), starts it with systemctl, and plays an
orchestrator against the HTTP API:

1. `apt-get install ./ozwald_*.deb`, `systemctl enable --now ozwald.target`, `ozwald status`;
2. posts a desired set: a stand-in for vLLM (an OpenAI-compatible test server) and one that cannot start;
3. follows the statuses (starting → available, and failed with the reason), then asks the model;
4. previews a profile change (`ozwald plan`), applies it (`ozwald update_services --wait`);
5. adds an on-demand instance: idle (only its socket listens), a request starts it and is answered once it
   is healthy, and 5 s without a request stop it again;
6. prints curl calls to try (and waits for Enter when run in a terminal), then purges the package.

Without root it only renders the unit and shows what systemd would run, through Podman's generator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ozwald.config import load_settings, parse_settings, resolve  # noqa: E402
from ozwald.quadlet import render_unit  # noqa: E402

if TYPE_CHECKING:
    from tests.deploy.package import InstalledOzwald
    from tests.testhost.harness import TestHost

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
  - name: chat-small
    description: a small chat model served on demand (started by the first request, stopped when idle)
    image: localhost/ozwald-testserver:latest
    ports: ["8081:8000"]
    health: {http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}
    environment: {MODEL_NAME: Qwen/Qwen2.5-0.5B-Instruct, START_DELAY_S: "2"}
    on_demand: {idle_stop: 5s}
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


def on_demand(host: TestHost, ozwald: InstalledOzwald) -> None:
    """Step 5: an on-demand instance goes idle → starting → available → stopping → idle around one request."""
    desired = [{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "fast-gpu"}, {"name": "chat-small"}]
    say("on demand: POST qwen1.5-vllm as it is plus chat-small (on_demand: {idle_stop: 5s}), then one request")
    ozwald.request("POST", "/srv/services/active/update/", desired)
    item: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while item.get("status") != "idle" and time.monotonic() < deadline:
        item = next((i for i in ozwald.request("GET", "/srv/services/active/")[1] if i["name"] == "chat-small"), {})
        time.sleep(0.05)
    print(f"  chat-small is {item.get('status')}: {item.get('info', {}).get('reason')}")
    print("  " + ozwald.sh("systemctl", "list-units", "--all", "--no-legend", "--plain", "ozwald-chat-small*")
          .strip().replace("\n", "\n  "))
    answered: dict[str, Any] = {}

    def ask() -> None:
        started = time.monotonic()
        request = urllib.request.Request(host.url(8081, "/v1/completions"),
                                         data=json.dumps({"model": "x", "prompt": "Wake up"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answered["text"] = json.loads(response.read())["choices"][0]["text"]
        answered["after"] = time.monotonic() - started

    t0 = time.monotonic()
    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    print(f"  t= 0.00 s  POST {host.url(8081, '/v1/completions')} sent to the idle socket")
    seen, told = "idle", False
    while time.monotonic() - t0 < 60:
        status = next((i["status"] for i in ozwald.request("GET", "/srv/services/active/")[1]
                       if i["name"] == "chat-small"), "gone")
        if "after" in answered and not told:
            print(f"  t={answered['after']:5.2f} s  answered {answered['text']!r}: the request was held, not refused")
            told = True
        if status != seen:
            print(f"  t={time.monotonic() - t0:5.2f} s  chat-small {status}")
            seen = status
        if told and status == "idle":
            break
        time.sleep(0.05)
    asker.join(timeout=5)
    left = ozwald.sh("podman", "ps", "--format", "{{.Names}}").split()
    print(f"  containers of chat-small running now: {[n for n in left if 'chat-small' in n] or 'none'}; "
          "the socket still listens, the next request starts it again")


def full_demo() -> int:
    from tests.deploy.package import SETTINGS, InstalledOzwald, find_deb
    from tests.testhost.harness import TestHost

    deb = find_deb()
    say(f"booting a throwaway Debian 13 host (systemd 257, Podman 5.4) to install {deb.name} in")
    with TestHost() as host:
        print(f"  host {host.name} at {host.ip}, booted in {host.timings.get('boot_s', 0):.2f} s")
        ozwald = InstalledOzwald(host, deb)
        say(f"apt-get install ./{deb.name}  (offline: the host has the dependencies)")
        ozwald.install()
        print(f"  installed in {ozwald.timings['apt_install_s']:.1f} s; ozwald.target enabled, nothing started;"
              " /etc/ozwald/ozwald.env (0600) holds the generated API key")
        example = host.read_file(SETTINGS)
        ozwald.write_settings(example.split("\nservices:")[0] + "\nservices:\n" + SERVICES)
        ozwald.open_api_to_the_test_machine()
        say("systemctl enable --now ozwald.target  (returns once the API answers: Type=notify)")
        started = time.monotonic()
        ozwald.systemctl("enable", "--now", "ozwald.target")
        print(f"  {time.monotonic() - started:.2f} s; GET {ozwald.url('/health')} -> "
              f"{ozwald.request('GET', '/health')[1]}")
        say("ozwald status  (in the host)")
        print(ozwald.ozwald("status").stdout.rstrip())

        settings = parse_settings("services:\n" + SERVICES)
        unit = render_unit(resolve(settings, "qwen1.5-vllm", "cpu-only", "no-gpu"), "qwen1.5-vllm")
        say("the Quadlet unit Ozwald writes for qwen1.5-vllm (cpu-only, no-gpu)")
        print(unit.text)

        desired = [{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}, {"name": "embeddings"}]
        say(f"POST /srv/services/active/update/ {json.dumps(desired)}  (from this machine, as an orchestrator)")
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
        say("ozwald list_active_services  (in the host)")
        print(ozwald.ozwald("list_active_services").stdout.rstrip())

        say("asking the served model, from the orchestrator's side")
        request = urllib.request.Request(host.url(8080, "/v1/completions"),
                                         data=json.dumps({"model": "x", "prompt": "Hello, Ozwald"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
        print(f"  model {answer['model']} answered: {answer['choices'][0]['text']!r}")

        say("ozwald plan qwen1.5-vllm:cpu-only:fast-gpu  (dry run), then update_services --wait")
        print(ozwald.ozwald("plan", "qwen1.5-vllm:cpu-only:fast-gpu").stdout.rstrip())
        print(ozwald.ozwald("update_services", "qwen1.5-vllm:cpu-only:fast-gpu", "--wait", timeout=180).stdout.rstrip())
        say("the environment of the container now answering on port 8080 (the new profile's, not the old)")
        with urllib.request.urlopen(host.url(8080, "/env"), timeout=5) as response:
            env = json.loads(response.read())
        print("  " + ", ".join(f"{k}={env.get(k)}" for k in ("MODEL_NAME", "GPU", "GPU_MEMORY_UTILIZATION",
                                                             "MAX_MODEL_LEN")))

        on_demand(host, ozwald)

        key = ozwald.key
        say("try it yourself while the host runs (the key is in the host's /etc/ozwald/ozwald.env)")
        print(f"  export OZWALD_SYSTEM_KEY={key[:6]}…  # sudo grep OZWALD_SYSTEM_KEY "
              f"/proc/{host.pid1}/root/etc/ozwald/ozwald.env")
        print(f"  curl {ozwald.url('/health')}")
        print(f'  curl -H "Authorization: Bearer $OZWALD_SYSTEM_KEY" {ozwald.url("/srv/services/active/")}')
        print(f'  curl -H "Authorization: Bearer $OZWALD_SYSTEM_KEY" -H "Content-Type: application/json" '
              f"-d '[{{\"name\":\"qwen1.5-vllm\",\"variety\":\"cpu-only\",\"profile\":\"no-gpu\"}}]' "
              f"{ozwald.url('/srv/services/active/update/')}")
        print(f"  curl {host.url(8080, '/v1/models')}")
        print(f"  curl {host.url(8081, '/v1/models')}   # chat-small, on demand: started by this, idle 5 s later")
        print(f"  sudo nsenter -t {host.pid1} -a systemctl status ozwald   # STATUS= line, reload, journal")
        if sys.stdin.isatty():
            input("\npress Enter to tear the host down ")
        say("apt-get purge ozwald: stops the provisioner, its Redis and every instance")
        ozwald.purge()
        left = ozwald.sh("systemctl", "list-units", "--state=active", "--no-legend", "ozwald*").strip()
        print(f"  running ozwald units left: {left or 'none'}")
    return 0


def main() -> int:
    if os.geteuid() != 0:
        return render_only()
    return full_demo()


if __name__ == "__main__":
    sys.exit(main())
