# SPDX-License-Identifier: AGPL-3.0-or-later
"""The Kubernetes export run by a real engine: `podman kube play` in the test host, then `podman kube down`.

The test server is exported in its nvidia variety and `fast` profile with `--gpus cdi` (Podman reads CDI
names in `resources.limits`; Kubernetes itself would get `nvidia.com/gpu: 1`), its secret written inline as a
Secret object (kube play makes it a Podman secret; `secretKeyRef` reads it back). The GPU is the stand-in CDI
spec of the GPU tests: `nvidia.com/gpu=all` maps two device nodes onto /dev/null. Everything else is real.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from ozwald.config import Settings
from ozwald.export.kubernetes import ExportOptions, export
from ozwald.records import ServiceRequest
from tests.integration.driver_kit import TESTSERVER, http_json
from tests.integration.test_gpu_admission import cdi_spec
from tests.testhost.harness import TestHost

PORT = 8093
SETTINGS = {"services": [{
    "name": "kube_server.1",  # not a DNS label: exported under its stable mapped name
    "image": TESTSERVER,
    "ports": [f"{PORT}:8000"],
    "health": {"http": "http://127.0.0.1:8000/health", "probe": "python3", "interval": "1s"},
    "environment": {"MODEL_NAME": "kube-base", "HF_TOKEN": {"value": "hf_kube_secret_0123"}},
    "varieties": {"nvidia": {"environment": {"GPU": "true"}}, "cpu-only": {"environment": {"GPU": "false"}}},
    "profiles": {"fast": {"environment": {"MODEL_NAME": "kube-fast", "MAX_MODEL_LEN": "45000"}}},
}]}
MANIFEST = "/root/ozwald-kube.yml"


def wait_for_answer(url: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_json(url, timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_export_runs_under_podman_kube_play_and_comes_down(testhost: TestHost) -> None:
    testhost.write_file("/etc/cdi/test-nvidia.json", cdi_spec())
    settings = Settings.model_validate(SETTINGS)
    exported = export(settings, [ServiceRequest(name="kube_server.1", variety="nvidia", profile="fast")],
                      ExportOptions(inline_secrets=True, gpus="cdi"))
    [item] = exported.instances
    name = item.name
    assert name != "kube_server.1" and name.startswith("kube-server-1-")
    testhost.write_file(MANIFEST, exported.yaml())
    played = testhost.exec(["podman", "kube", "play", "--publish", f"{PORT}:8000", MANIFEST], timeout=120)
    assert played.returncode == 0, played.stdout + played.stderr
    try:
        env = wait_for_answer(testhost.url(PORT, "/env"), 60)
        assert env["MODEL_NAME"] == "kube-fast" and env["MAX_MODEL_LEN"] == "45000" and env["GPU"] == "true"
        assert env["HF_TOKEN"] == "hf_kube_secret_0123"  # through the Secret, by secretKeyRef
        models = http_json(testhost.url(PORT, "/v1/models"))
        assert models["data"][0]["id"] == "kube-fast"
        names = testhost.exec(["podman", "ps", "--format", "{{.Names}}", "--filter", "label=ozwald.instance="
                               "kube_server.1"]).stdout.split()
        assert len(names) == 1, testhost.exec(["podman", "ps", "-a"]).stdout
        # The CDI device reached the container's process: both stand-in GPU nodes exist in it.
        seen = testhost.exec(["podman", "exec", names[0], "python3", "-c",
                              "import os; print(os.path.exists('/dev/nvidia0'), os.path.exists('/dev/nvidia1'))"])
        assert seen.stdout.split() == ["True", "True"], seen.stderr
        inspected = yaml.safe_load(testhost.exec(["podman", "pod", "inspect", f"{name}-pod"]).stdout)
        assert inspected, "the Deployment's pod exists under the exported name"
    finally:
        down = testhost.exec(["podman", "kube", "down", MANIFEST], timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert testhost.exec(["podman", "ps", "-a", "--format", "{{.Names}}"]).stdout.split() == []
    assert testhost.exec(["podman", "pod", "ps", "-q"]).stdout.split() == []
