# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald export kubernetes`: schema-valid objects for every example, stable DNS names, what maps and what not.

The schema is Kubernetes 1.37's, bundled with the pinned `kubernetes-validate` (no network), in its strict
form (unknown fields are errors).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ozwald import cli
from ozwald.config import Settings, load_settings, resolve
from ozwald.config.values import NAME_PATTERN
from ozwald.export.kubernetes import GPU_MODES, ExportOptions, export, k8s_name
from ozwald.records import ServiceRequest, UpdateError
from ozwald.state.profile_results import ProfileResult

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "contrib" / "examples").glob("*.yml"))
K8S_VERSION = "1.37"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def combinations(path: Path) -> list[tuple[str, str | None, str | None]]:
    found = load_settings(path)
    out: list[tuple[str, str | None, str | None]] = []
    for service in found.services:
        varieties: list[str | None] = [*service.varieties] or [None]
        for variety in varieties:
            for profile in [None, *service.profiles]:
                out.append((service.name, variety, profile))
    return out


CASES = [(path, *case) for path in EXAMPLES for case in combinations(path)]


def valid(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    name = obj["metadata"]["name"]
    assert len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name), name
    if obj["kind"] in ("Service", "Deployment"):
        assert len(name) <= 63 and DNS_1035.fullmatch(name), name


def one(settings_: Settings, name: str, variety: str | None = None, profile: str | None = None,
        **options: Any) -> Any:
    item = ServiceRequest(name=name, variety=variety, profile=profile)
    return export(settings_, [item], ExportOptions(**options)).instances[0]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", GPU_MODES)
@pytest.mark.parametrize(("path", "service", "variety", "profile"), CASES,
                         ids=[f"{p.stem}:{s}:{v}:{pr}" for p, s, v, pr in CASES])
def test_every_example_combination_exports_schema_valid_yaml(path: Path, service: str, variety: str | None,
                                                             profile: str | None, mode: str) -> None:
    found = load_settings(path)
    exported = export(found, [ServiceRequest(name=service, variety=variety, profile=profile)],
                      ExportOptions(namespace="models", gpus=mode))  # type: ignore[arg-type]
    text = exported.yaml()
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    assert objects == exported.objects()  # what is printed is what was built
    item = exported.instances[0]
    if found.service(service).type != "container":  # type: ignore[union-attr]
        assert objects == [] and "not a container" in item.notes[0]
        assert f"# warning: {item.notes[0]}" in text
        return
    for obj in objects:
        valid(obj)
        assert obj["metadata"].get("namespace") == "models"
    deployment = by_kind(objects)["Deployment"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = resolve(found, service, variety, profile)
    env = {e["name"]: e.get("value") for e in container_of(objects).get("env", [])}
    assert env == {k: v.replace("$", "$$") for k, v in spec.environment if k not in spec.secret_keys}
    for note in item.notes:  # each on stderr and as a comment
        assert f"# warning: {note}" in text
        assert f"warning: {service}: {note}" in exported.messages()


def test_all_example_combinations_are_covered() -> None:
    assert len(EXAMPLES) >= 2
    assert ("qwen1.5-vllm", "nvidia", "fast-gpu") in combinations(ROOT / "contrib/examples/contract.yml")
    assert len(CASES) == 27  # 3 × 3 + 1 in contract.yml, 5 × 3 + 1 + 1 in gpu-health.yml


NAMES = st.from_regex(NAME_PATTERN.replace("^", r"\A").replace("$", r"\Z"))


@settings(max_examples=500, deadline=None)
@given(names=st.lists(NAMES, min_size=1, max_size=30, unique=True))
def test_names_map_to_dns_labels_stably_and_without_collisions(names: list[str]) -> None:
    mapped = [k8s_name(n) for n in names]
    for name, out in zip(names, mapped, strict=True):
        assert len(out) <= 63 and DNS_1035.fullmatch(out), (name, out)
        assert k8s_name(name) == out
    assert len(set(mapped)) == len(names)


def test_names_that_differ_only_where_kubernetes_cannot_tell_stay_apart() -> None:
    names = ["qwen-1-5", "qwen_1.5", "Qwen_1.5", "QWEN-1-5", "qwen.1.5", "qwen-1-5-", "7b", "o7b",
             "a" * 63, "a" * 62 + "A", "x-0123456789ab", k8s_name("Qwen_1.5")]
    mapped = [k8s_name(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert k8s_name("qwen-1-5") == "qwen-1-5" and k8s_name("embeddings") == "embeddings"  # valid names kept
    assert k8s_name("qwen1.5-vllm") == k8s_name("qwen1.5-vllm") != "qwen1.5-vllm"


def test_a_set_of_instances_is_validated_like_an_update() -> None:
    found = load_settings(ROOT / "contrib/examples/contract.yml")
    with pytest.raises(UpdateError) as caught:
        export(found, [ServiceRequest(name="qwen1.5-vllm", variety="tpu")])
    assert (caught.value.index, caught.value.field) == (0, "variety")
    with pytest.raises(UpdateError):
        export(found, [ServiceRequest(name="a", service="qwen1.5-vllm"), ServiceRequest(name="a", service="x")])
    first = export(found, [ServiceRequest(name="qwen1.5-vllm")]).instances[0]
    assert by_kind(first.objects)["Deployment"]["metadata"]["labels"]["ozwald.variety"] == "nvidia"  # the first


SECRETS = """
services:
  - name: llm
    image: localhost/llm:1
    environment:
      HF_TOKEN: {file: %s}
      API_KEY: plain-looking-secret
      NOT_SECRET: {value: "m-", secret: false}
      PRICE: "$(HOME) costs $$5"
    command: ["--say", "$(HOME)"]
"""


def test_secrets_are_references_and_the_values_never_appear(tmp_path: Path) -> None:
    token = tmp_path / "hf_token"
    token.write_text("hf_s3cret_value\n")
    found = Settings.model_validate(yaml.safe_load(SECRETS % token))
    exported = export(found, [ServiceRequest(name="llm")], ExportOptions(namespace="ml"))
    text, messages = exported.yaml(), "\n".join(exported.messages())
    assert "hf_s3cret_value" not in text + messages and "plain-looking-secret" not in text + messages
    env = {e["name"]: e for e in container_of(exported.objects())["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "llm-env", "key": "HF_TOKEN"}}
    assert env["API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "llm-env", "key": "API_KEY"}}
    assert env["NOT_SECRET"] == {"name": "NOT_SECRET", "value": "m-"}
    # Kubernetes would expand $(HOME) and read $$ as $: written doubled, the container gets the text as is.
    assert env["PRICE"]["value"] == "$$(HOME) costs $$$$5"
    assert container_of(exported.objects())["args"] == ["--say", "$$(HOME)"]
    assert "kind: Secret" not in text
    command = f"kubectl create secret generic llm-env --namespace ml --from-literal=API_KEY=\"$API_KEY\" " \
              f"--from-file=HF_TOKEN={token}"
    assert command in messages and f"# create the Secret first: {command}" in text
    for obj in exported.objects():
        valid(obj)
    inline = export(found, [ServiceRequest(name="llm")], ExportOptions(inline_secrets=True))
    secret = by_kind(inline.objects())["Secret"]
    assert secret["stringData"] == {"API_KEY": "plain-looking-secret", "HF_TOKEN": "hf_s3cret_value"}
    assert any("--inline-secrets" in line for line in inline.messages())
    valid(secret)


def test_an_unreadable_secret_file_does_not_stop_the_export_unless_inline() -> None:
    found = Settings.model_validate(yaml.safe_load(SECRETS % "/nonexistent/hf_token"))
    item = one(found, "llm")
    assert any("cannot read environment HF_TOKEN from /nonexistent/hf_token" in n for n in item.notes)
    assert "ozwald.spec-hash" not in by_kind(item.objects)["Deployment"]["metadata"]["labels"]
    with pytest.raises(UpdateError, match="cannot read environment HF_TOKEN from /nonexistent/hf_token"):
        one(found, "llm", inline_secrets=True)


GPUS = """
services:
  - name: llm
    image: localhost/llm:1
    health: {http: "http://127.0.0.1:8000/v1/models?x=1", interval: 2.5s, timeout: 3s, retries: 4}
    start_timeout: 10m
    varieties:
      nvidia: {}
      two: {devices: [nvidia.com/gpu=all], resources: {gpus: 2, vram_gb: 20}}
      pinned: {devices: ["nvidia.com/gpu=1"]}
      amdgpu: {}
      raw: {devices: ["/dev/dri/renderD128"]}
      cpu-only: {resources: {memory_gb: 1.5, cpus: 0.5}}
  - name: plain
    image: localhost/plain:1
    min_uptime: 7s
    ports: ["8080:8000", "9000/udp"]
    volumes: ["/srv/m:/m:ro,z", "cache:/c"]
    shm_size: 2g
    restart: "no"
    labels: {team: a, note: "a value with spaces", "Bad_Prefix/x": y}
"""


def test_gpus_from_devices_and_declared_counts() -> None:
    found = Settings.model_validate(yaml.safe_load(GPUS))
    nvidia = one(found, "llm", "nvidia")
    assert container_of(nvidia.objects)["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert any("nvidia.com/gpu=all gives every GPU" in n for n in nvidia.notes)
    two = one(found, "llm", "two")
    assert container_of(two.objects)["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert any("VRAM 20 GB per GPU" in n for n in two.notes)
    pinned = one(found, "llm", "pinned")
    assert any("nvidia.com/gpu=1: a pinned GPU does not map" in n for n in pinned.notes)
    assert container_of(one(found, "llm", "amdgpu").objects)["resources"] == {"limits": {"amd.com/gpu": 1}}
    raw = one(found, "llm", "raw")
    assert "resources" not in container_of(raw.objects)
    assert any("/dev/dri/renderD128: a host device path does not map" in n for n in raw.notes)
    cpu = one(found, "llm", "cpu-only")
    assert container_of(cpu.objects)["resources"] == {"requests": {"memory": "1536Mi", "cpu": "500m"}}
    cdi = one(found, "llm", "nvidia", gpus="cdi")
    assert container_of(cdi.objects)["resources"] == {"limits": {"nvidia.com/gpu=all": 1}}
    dra = one(found, "llm", "two", gpus="dra")
    claim = by_kind(dra.objects)["ResourceClaimTemplate"]
    assert claim["spec"]["spec"]["devices"]["requests"] == [
        {"name": "nvidia-gpu", "exactly": {"deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount",
                                           "count": 2}}]
    pod = by_kind(dra.objects)["Deployment"]["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpus", "resourceClaimTemplateName": f"{dra.name}-gpus"}]
    assert container_of(dra.objects)["resources"]["claims"] == [{"name": "gpus"}]
    for obj in dra.objects:
        valid(obj)


def test_probes_from_health_and_readiness_from_min_uptime() -> None:
    found = Settings.model_validate(yaml.safe_load(GPUS))
    llm = one(found, "llm", "cpu-only")
    container = container_of(llm.objects)
    get = {"path": "/v1/models?x=1", "port": 8000, "scheme": "HTTP"}
    assert container["readinessProbe"] == {"httpGet": get, "periodSeconds": 3, "timeoutSeconds": 3,
                                           "failureThreshold": 4}
    assert container["startupProbe"] == {"httpGet": get, "periodSeconds": 3, "timeoutSeconds": 3,
                                         "failureThreshold": 200}  # 600 s of 3 s periods
    assert any("health.interval 2.5 s: probes count whole seconds; 3 s exported" in n for n in llm.notes)
    assert "minReadySeconds" not in by_kind(llm.objects)["Deployment"]["spec"]
    plain = one(found, "plain")
    deployment = by_kind(plain.objects)["Deployment"]
    assert deployment["spec"]["minReadySeconds"] == 7
    assert "readinessProbe" not in container_of(plain.objects)


def test_ports_volumes_labels_and_what_does_not_map() -> None:
    found = Settings.model_validate(yaml.safe_load(GPUS))
    exported = export(found, [ServiceRequest(name="plain"), ServiceRequest(name="p2", service="plain")])
    plain = exported.instances[0]
    kinds = by_kind(plain.objects)
    assert kinds["Service"]["spec"]["ports"] == [
        {"name": "tcp-8080", "port": 8080, "targetPort": 8000, "protocol": "TCP"},
        {"name": "udp-9000", "port": 9000, "targetPort": 9000, "protocol": "UDP"}]
    assert kinds["Service"]["spec"]["selector"] == {"app.kubernetes.io/instance": "plain"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "volume-0", "hostPath": {"path": "/srv/m"}},
        {"name": "volume-1", "persistentVolumeClaim": {"claimName": "cache"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    assert container_of(plain.objects)["volumeMounts"][0] == {"name": "volume-0", "mountPath": "/m", "readOnly": True}
    assert [o["metadata"]["name"] for o in exported.volumes] == ["cache"]  # one claim for both instances
    assert any("'cache' is used by plain, p2" in w for w in exported.warnings)
    labels = kinds["Deployment"]["metadata"]["labels"]
    assert labels["team"] == "a" and labels["ozwald.instance"] == "plain"
    assert kinds["Deployment"]["metadata"]["annotations"] == {"note": "a value with spaces"}
    notes = "\n".join(plain.notes)
    for expected in ("options z do not map", "a host path becomes hostPath", "restart no:",
                     "label 'Bad_Prefix/x': not a valid Kubernetes label"):
        assert expected in notes
    for obj in exported.objects():
        valid(obj)


def result(spec_hash: str, ram: float, vram: dict[str, float] | None = None) -> ProfileResult:
    at = datetime(2026, 12, 2, 16, 40, tzinfo=UTC)
    return ProfileResult(service="llm", variety="nvidia", spec_hash=spec_hash, outcome="measured", started_at=at,
                         finished_at=at, ram_peak_mib=ram, vram_peak_mib=vram or {})


def test_memory_requests_from_fresh_measured_footprints_only() -> None:
    found = Settings.model_validate(yaml.safe_load(GPUS))
    fresh_hash = resolve(found, "llm", "nvidia").spec_hash
    item = export(found, [ServiceRequest(name="llm", variety="nvidia")], ExportOptions(margin=0.1),
                  [result(fresh_hash, 1000.0, {"nvidia:0": 4096.0}), result("0" * 16, 99999.0)]).instances[0]
    assert container_of(item.objects)["resources"]["requests"] == {"memory": "1100Mi"}  # +10 %
    assert any("RAM peak 1000 MiB + 10 % margin" in line for line in item.info)
    assert any("VRAM 4.4 GB per GPU" in n for n in item.notes)
    stale = export(found, [ServiceRequest(name="llm", variety="nvidia")], None,
                   [result("0" * 16, 99999.0)]).instances[0]
    assert "requests" not in container_of(stale.objects)["resources"]
    assert any("is stale" in n for n in stale.notes)


def test_the_cli_prints_yaml_on_stdout_and_notes_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "contrib/examples/contract.yml")
    assert cli.main(["export", "kubernetes", "qwen1.5-vllm:nvidia:fast-gpu", "--config", config]) == 0
    out, err = capsys.readouterr()
    [deployment] = [doc for doc in yaml.safe_load_all(out) if doc]
    valid(deployment)
    assert "nvidia.com/gpu=all gives every GPU" in err
    assert cli.main(["export", "kubernetes", "qwen1.5-vllm:tpu", "--config", config]) == 2
    assert "has no variety 'tpu'" in capsys.readouterr().err
    assert cli.main(["export", "kubernetes", "--config", config]) == 2


GOLDEN = Path(__file__).parent / "golden" / "contract-qwen1.5-vllm-nvidia-fast-gpu"


def test_the_contract_example_matches_its_golden_export(capsys: pytest.CaptureFixture[str]) -> None:
    """The export the README and the issue show; OZWALD_UPDATE_GOLDEN=1 rewrites it (then review the diff)."""
    config = str(ROOT / "contrib/examples/contract.yml")
    assert cli.main(["export", "kubernetes", "qwen1.5-vllm:nvidia:fast-gpu", "--config", config]) == 0
    out, err = capsys.readouterr()
    yml, stderr = GOLDEN.parent / f"{GOLDEN.name}.yml", GOLDEN.parent / f"{GOLDEN.name}.stderr"
    if os.environ.get("OZWALD_UPDATE_GOLDEN") == "1":
        yml.write_text(out)
        stderr.write_text(err)
    assert (out, err) == (yml.read_text(), stderr.read_text())


def test_the_cli_offers_exactly_the_export_gpu_modes() -> None:
    from ozwald.cli import export as cli_export

    assert cli_export.GPU_MODES == GPU_MODES
