# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald instances as Kubernetes objects: one pure function from the settings to plain dicts, then YAML.

Per instance: a Deployment (one replica, `Recreate`: a model server must never run twice on one GPU while
the old pod drains), a Service for its published ports, PersistentVolumeClaims for its named volumes, and
for its secrets a `secretKeyRef` to a Secret the operator creates (the `kubectl create secret` command is
returned, never the values; `inline_secrets` writes the Secret, on request only). The spec is the one the
provisioner runs (`ozwald.provisioner.requests`), so variety, profile and GPU devices merge the same way.

What Kubernetes cannot express is never dropped in silence: each instance carries `notes`, which the CLI
prints on stderr and the YAML carries as comments above the instance's objects.

Names: every object is named after the instance through `k8s_name`, a stable mapping of every name Ozwald
accepts (`ozwald.config.values.Name`) to a DNS-1035 label, which is also a valid DNS-1123 label and
subdomain (Deployments, Services, PVCs, Secrets, containers); see its docstring for why it cannot collide.
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import SecretStr

from ozwald.config import EffectiveSpec, ResolveError, Settings
from ozwald.config.model import EnvSource, Health, Layer, Service, Volume
from ozwald.config.resolve import (
    DEFAULT_MIN_UPTIME,
    DEFAULT_RESTART,
    DEFAULT_RESTART_DELAY,
    DEFAULT_START_TIMEOUT,
)
from ozwald.provisioner.requests import HostCapabilities, effective_spec, validate_requests
from ozwald.records import DesiredInstance, ServiceRequest
from ozwald.state.profile_results import ProfileResult

GpuMode = Literal["device-plugin", "dra", "cdi"]
GPU_MODES: tuple[GpuMode, ...] = ("device-plugin", "dra", "cdi")
# The device-plugin resource and the DRA device class of each GPU vendor's CDI kind.
GPU_KINDS = {"nvidia.com/gpu": "gpu.nvidia.com", "amd.com/gpu": "gpu.amd.com"}
MAX_LABEL = 63
HASH_HEX = 12  # 48 bits: see k8s_name
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HASHED = re.compile(rf"-[0-9a-f]{{{HASH_HEX}}}$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_SIZE_UNITS = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}
MANAGED_BY = "ozwald"
# Hosts with every GPU vendor and no CDI check: a variety left out is the service's first one.
ANY_HOST = HostCapabilities(gpu_vendors=frozenset({"nvidia", "amd"}))


def k8s_name(name: str) -> str:
    """A DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters) for an Ozwald name.

    A name that already is such a label is kept as it is, unless it ends like a hashed name (`-` and 12
    hex digits). Every other name becomes a slug (lower case, runs of other characters as `-`, an `o` in
    front of a leading digit) cut to 50 characters, plus `-` and the first 12 hex digits of its SHA-256.
    So a kept name never equals a hashed one (only hashed ones end in `-<12 hex>`), and two hashed names
    are equal only if their 48-bit digests are: Ozwald's names differ in case, `_` and `.`, which a slug
    alone would merge (`Qwen_1.5`, `qwen-1-5`), and no injective map into 63 characters of a smaller
    alphabet exists, so the digest carries the difference.
    """
    if len(name) <= MAX_LABEL and _DNS_LABEL.fullmatch(name) and not _HASHED.search(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_HEX]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = "o" + slug
    slug = slug[:MAX_LABEL - HASH_HEX - 1].rstrip("-")
    return f"{slug}-{digest}"


@dataclass(frozen=True)
class ExportOptions:
    """`namespace` for every object; `inline_secrets` writes Secret objects with the values (else the
    operator creates them); `gpus`: `device-plugin` (`nvidia.com/gpu: N` limits), `dra` (a
    ResourceClaimTemplate per instance), or `cdi` (the CDI device names as limits, which `podman kube play`
    reads, and Kubernetes refuses); `margin` on measured footprints, as the provisioner's admission adds."""

    namespace: str | None = None
    inline_secrets: bool = False
    gpus: GpuMode = "device-plugin"
    margin: float = 0.1


@dataclass(frozen=True)
class SecretRecipe:
    """The Secret an instance's `secretKeyRef`s name, and where each value comes from (never the value)."""

    name: str
    namespace: str | None
    sources: tuple[tuple[str, str], ...]  # (variable, where its value is: a file path or a description)

    def command(self) -> str:
        """The `kubectl create secret generic` line: files by path, other values from shell variables."""
        words = ["kubectl", "create", "secret", "generic", self.name]
        if self.namespace:
            words += ["--namespace", self.namespace]
        out = shlex.join(words)
        for key, source in self.sources:
            if source.startswith("/"):
                out += " " + shlex.quote(f"--from-file={key}={source}")
            else:
                out += f' --from-literal={key}="${key}"'
        return out

    def hints(self) -> list[str]:
        return [f"{key}: {source}" for key, source in self.sources if not source.startswith("/")]


@dataclass
class InstanceExport:
    """One instance's objects, what did not map (`notes`), and the Secret the operator must create."""

    instance: str
    name: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)  # how something was mapped, worth a comment
    secret: SecretRecipe | None = None


@dataclass
class Export:
    """The exported instances in request order, and the PVCs of named volumes (shared between instances)."""

    instances: list[InstanceExport]
    volumes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the export as a whole

    def objects(self) -> list[dict[str, Any]]:
        return [*self.volumes, *(obj for item in self.instances for obj in item.objects)]

    def yaml(self) -> str:
        """Multi-document YAML; each instance's notes as comments above its first object."""
        docs: list[str] = []
        for volume in self.volumes:
            docs.append(_dump(volume))
        for item in self.instances:
            head = [f"# Ozwald instance {item.instance}"
                    + (f" (Kubernetes name {item.name})" if item.name != item.instance else "")]
            head += [f"# {line}" for line in item.info]
            head += [f"# warning: {note}" for note in item.notes]
            if item.secret is not None and not any(o["kind"] == "Secret" for o in item.objects):
                head.append(f"# create the Secret first: {item.secret.command()}")
            if not item.objects:
                docs.append("\n".join(head) + "\n")
                continue
            for index, obj in enumerate(item.objects):
                docs.append(("\n".join(head) + "\n" if index == 0 else "") + _dump(obj))
        return "".join(f"---\n{doc}" for doc in docs)

    def messages(self) -> list[str]:
        """What the operator must read, for stderr: what does not map, and the Secrets to create."""
        lines = [f"warning: {w}" for w in self.warnings]
        for item in self.instances:
            lines += [f"warning: {item.instance}: {note}" for note in item.notes]
        for item in self.instances:
            if item.secret is None:
                continue
            if any(o["kind"] == "Secret" for o in item.objects):
                lines.append(f"warning: {item.instance}: the YAML holds the values of "
                             f"{', '.join(k for k, _ in item.secret.sources)} (--inline-secrets)")
                continue
            lines.append(f"{item.instance}: create Secret {item.secret.name} before applying:")
            lines.append(f"  {item.secret.command()}")
            lines += [f"    # {hint}" for hint in item.secret.hints()]
        return lines


class _Dumper(yaml.SafeDumper):
    """No anchors and aliases: the probes share a handler, which each reader should see written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


# -- the export --------------------------------------------------------------------------------------------


def export(settings: Settings, items: Sequence[ServiceRequest], options: ExportOptions | None = None,
           results: Sequence[ProfileResult] = ()) -> Export:
    """Kubernetes objects for the desired set `items`, validated as the provisioner validates an update
    (UpdateError names the item and field); a variety left out is the service's first. Measured footprints
    come from `results` (profiling results; only fresh ones, those of the spec hash exported, are used)."""
    options = options or ExportOptions()
    # Validated without reading secret files or credentials: their values go into the export only inline.
    instances = validate_requests(settings if options.inline_secrets else _placeholder_secrets(settings), items,
                                  ANY_HOST)
    names: dict[str, str] = {}
    out = Export(instances=[])
    volumes: dict[str, dict[str, Any]] = {}
    volume_users: dict[str, list[str]] = {}
    for instance in instances:
        name = k8s_name(instance.name)
        if name in names:  # cannot happen short of a digest collision; never emit two objects of one name
            raise ValueError(f"instances {names[name]!r} and {instance.name!r} map to the same Kubernetes name "
                             f"{name!r}")
        names[name] = instance.name
        item = InstanceExport(instance=instance.name, name=name)
        out.instances.append(item)
        service = settings.service(instance.service)
        assert service is not None  # validated
        if service.type != "container":
            item.notes.append(f"service {service.name!r} is of type {service.type!r}, not a container: "
                              "nothing to run, no object exported")
            continue
        spec, known = _spec(settings, service, instance, options, item.notes)
        _instance_objects(item, spec, service, instance, options, results if known else (), volumes, known)
        for volume in spec.volumes:
            if not volume.source.startswith("/"):
                volume_users.setdefault(volume.source, []).append(instance.name)
    out.volumes = list(volumes.values())
    for source, users in volume_users.items():
        if len(users) > 1:
            out.warnings.append(f"volume {source!r} is used by {', '.join(users)}: one ReadWriteOnce claim can be "
                                "mounted on one node only; give it a ReadWriteMany storage class or one volume each")
    return out


def _spec(settings: Settings, service: Service, instance: DesiredInstance, options: ExportOptions,
          notes: list[str]) -> tuple[EffectiveSpec, bool]:
    """The instance's spec, and whether it is the one the provisioner runs. A secret file or credential
    that cannot be read here does not stop the export (its value never goes into it) unless the values are
    to be written inline; the spec hash then cannot be known."""
    try:
        return effective_spec(settings, instance), True
    except ResolveError as exc:
        if options.inline_secrets or not _has_secret_sources(service):
            raise
        notes.append(f"{exc.message}: exported without it; the spec hash (label ozwald.spec-hash) and measured "
                     "footprints are not known here")
        return effective_spec(_placeholder_secrets(settings, service), instance), False


def _layers(service: Service, variety: str | None, profile: str | None) -> list[Layer]:
    layers: list[Layer] = [service]
    if variety is not None:
        layers.append(service.varieties[variety])
    if profile is not None:
        layers.append(service.profiles[profile])
    return layers


def _has_secret_sources(service: Service) -> bool:
    layers = [service, *service.varieties.values(), *service.profiles.values()]
    values = [v for layer in layers for v in (layer.environment or {}).values()]
    return any(isinstance(v, EnvSource) and v.value is None for v in values)


def _placeholder_secrets(settings: Settings, service: Service | None = None) -> Settings:
    """The settings with the service's (or every service's) file and credential values replaced by empty
    inline ones."""
    return settings.model_copy(update={"services": tuple(
        _blank_service(s) if service is None or s.name == service.name else s for s in settings.services)})


def _blank(layer: Any) -> Any:
    if not layer.environment:
        return layer
    env = {k: (EnvSource(value=SecretStr(""), secret=v.secret) if isinstance(v, EnvSource) and v.value is None
               else v) for k, v in layer.environment.items()}
    return layer.model_copy(update={"environment": env})


def _blank_service(service: Service) -> Service:
    changed: Service = _blank(service).model_copy(update={
        "varieties": {n: _blank(v) for n, v in service.varieties.items()},
        "profiles": {n: _blank(p) for n, p in service.profiles.items()}})
    return changed


def _secret_sources(service: Service, instance: DesiredInstance) -> dict[str, str | EnvSource]:
    merged: dict[str, str | EnvSource] = {}
    for layer in _layers(service, instance.variety, instance.profile):
        merged.update(layer.environment or {})
    return merged


def _describe_source(value: str | EnvSource | None) -> str:
    if isinstance(value, EnvSource):
        if value.file is not None:
            return value.file
        if value.credential is not None:
            return f"systemd credential {value.credential!r} of ozwald.service"
        return "written inline in the settings ({value: ...})"
    return "written in the settings (its name looks secret)"


def _instance_objects(item: InstanceExport, spec: EffectiveSpec, service: Service, instance: DesiredInstance,
                      options: ExportOptions, results: Sequence[ProfileResult],
                      volumes: dict[str, dict[str, Any]], known: bool) -> None:
    name, notes = item.name, item.notes
    labels, annotations = _labels(spec, instance.name, name, known, notes)
    selector = {"app.kubernetes.io/instance": name}
    meta = _meta(name, options, labels, annotations)
    container: dict[str, Any] = {"name": name, "image": spec.image, "imagePullPolicy": "IfNotPresent"}
    if spec.entrypoint is not None:
        container["command"] = [_no_expansion(a) for a in spec.entrypoint]
    if spec.command is not None:
        container["args"] = [_no_expansion(a) for a in spec.command]
    env, secret_keys = _env(spec, f"{name}-env")
    if env:
        container["env"] = env
    if secret_keys:
        sources = _secret_sources(service, instance)
        item.secret = SecretRecipe(f"{name}-env", options.namespace,
                                   tuple((k, _describe_source(sources.get(k))) for k in secret_keys))
        if options.inline_secrets:
            values = spec.env
            item.objects.append({"apiVersion": "v1", "kind": "Secret",
                                 "metadata": _meta(item.secret.name, options, labels, {}), "type": "Opaque",
                                 "stringData": {k: values[k] for k in secret_keys}})
    ports = _container_ports(spec)
    if ports:
        container["ports"] = ports
    resources, claims = _resources(spec, name, options, results, notes, item.info)
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {"containers": [container]}
    mounts, pod_volumes = _volumes(spec, options, labels, volumes, notes)
    if mounts:
        container["volumeMounts"] = mounts
        pod["volumes"] = pod_volumes
    probes = _probes(spec, notes)
    container.update(probes)
    pod["terminationGracePeriodSeconds"] = math.ceil(spec.stop_timeout)
    if claims is not None:
        pod["resourceClaims"] = [{"name": "gpus", "resourceClaimTemplateName": claims["metadata"]["name"]}]
        item.objects.append(claims)
    _restart_notes(spec, notes)
    # One replica, replaced by stopping it first: two model servers on one GPU would not fit.
    deployment_spec: dict[str, Any] = {"replicas": 1, "strategy": {"type": "Recreate"}}
    if spec.health is None and spec.min_uptime > 0:
        # Ozwald's `available` without a health check: up for min_uptime.
        deployment_spec["minReadySeconds"] = math.ceil(spec.min_uptime)
    template_meta: dict[str, Any] = {"labels": labels}
    if annotations:
        template_meta["annotations"] = annotations
    deployment_spec |= {"selector": {"matchLabels": selector}, "template": {"metadata": template_meta, "spec": pod}}
    item.objects.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deployment_spec})
    service_ports = _service_ports(spec, notes)
    if service_ports:
        item.objects.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, options, labels, {}),
                             "spec": {"selector": selector, "ports": service_ports}})


def _meta(name: str, options: ExportOptions, labels: dict[str, str], annotations: dict[str, str]
          ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def label_key_ok(key: str) -> bool:
    """A valid Kubernetes label or annotation key: `[prefix/]name`, prefix a DNS subdomain."""
    prefix, slash, label = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(label) <= MAX_LABEL and bool(_LABEL_NAME.fullmatch(label))


def label_value_ok(value: str) -> bool:
    return value == "" or (len(value) <= MAX_LABEL and bool(_LABEL_NAME.fullmatch(value)))


def _labels(spec: EffectiveSpec, instance: str, name: str, known: bool, notes: list[str]
            ) -> tuple[dict[str, str], dict[str, str]]:
    """Kubernetes' recommended labels, Ozwald's own (`ozwald.*`, as on its containers) and the settings'
    labels; a value a label cannot hold becomes an annotation of the same key."""
    labels = {"app.kubernetes.io/name": k8s_name(spec.service), "app.kubernetes.io/instance": name,
              "app.kubernetes.io/managed-by": MANAGED_BY}
    annotations: dict[str, str] = {}
    own = [("ozwald.managed", "true"), ("ozwald.instance", instance), ("ozwald.service", spec.service),
           ("ozwald.variety", spec.variety or ""), ("ozwald.profile", spec.profile or "")]
    if known:
        own.append(("ozwald.spec-hash", spec.spec_hash))
    for key, value in [*own, *spec.labels]:
        if not label_key_ok(key):
            notes.append(f"label {key!r}: not a valid Kubernetes label or annotation key; not exported")
        elif label_value_ok(value):
            labels[key] = value
        else:
            annotations[key] = value
    return labels, annotations


def _no_expansion(value: str) -> str:
    """Kubernetes expands `$(VAR)` in env values, command and args, and reads `$$` as `$`; Ozwald passes them
    word for word. Doubling every `$` keeps the text as written."""
    return value.replace("$", "$$")


def _env(spec: EffectiveSpec, secret_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    env: list[dict[str, Any]] = []
    secret_keys: list[str] = []
    for key, value in spec.environment:
        if key in spec.secret_keys:
            secret_keys.append(key)
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
        else:
            env.append({"name": key, "value": _no_expansion(value)})
    return env, secret_keys


def _container_ports(spec: EffectiveSpec) -> list[dict[str, Any]]:
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for port in spec.ports:
        key = (port.container, port.protocol)
        if key not in seen:
            seen[key] = {"name": f"{port.protocol}-{port.container}", "containerPort": port.container,
                         "protocol": port.protocol.upper()}
    return list(seen.values())


def _service_ports(spec: EffectiveSpec, notes: list[str]) -> list[dict[str, Any]]:
    """One Service port per published host port (the container's port where no host port is given)."""
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for port in spec.ports:
        number = port.host or port.container
        if port.host_ip is not None:
            notes.append(f"port {port.podman_spec()}: the host address {port.host_ip} does not map; the Service "
                         f"answers on its cluster IP, port {number}")
        if port.host is None:
            notes.append(f"port {port.podman_spec()}: a random host port does not map; the Service uses port "
                         f"{number}")
        key = (number, port.protocol)
        if key in seen:
            notes.append(f"port {port.podman_spec()}: port {number}/{port.protocol} is already published; "
                         "not exported twice")
            continue
        seen[key] = {"name": f"{port.protocol}-{number}", "port": number, "targetPort": port.container,
                     "protocol": port.protocol.upper()}
    return list(seen.values())


def _quantity_mib(mib: float) -> str:
    return f"{math.ceil(mib)}Mi"


def _cpus(cpus: float) -> str | int:
    return int(cpus) if float(cpus).is_integer() else f"{math.ceil(cpus * 1000)}m"


def _fresh(spec: EffectiveSpec, results: Sequence[ProfileResult]) -> tuple[ProfileResult | None, ProfileResult | None]:
    """The newest measured result of this exact spec, and the newest measured one of another (stale) spec."""
    key = (spec.service, spec.variety, spec.profile)
    measured = sorted((r for r in results if r.config_key == key and r.outcome == "measured"),
                      key=lambda r: r.finished_at, reverse=True)
    fresh = next((r for r in measured if r.spec_hash == spec.spec_hash), None)
    stale = next((r for r in measured if r.spec_hash != spec.spec_hash), None)
    return fresh, stale


def _resources(spec: EffectiveSpec, name: str, options: ExportOptions, results: Sequence[ProfileResult],
               notes: list[str], info: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Container resources (memory and CPU requests, GPU limits) and, for DRA, the ResourceClaimTemplate."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    declared = spec.resources
    fresh, stale = _fresh(spec, results)
    when = fresh.finished_at.strftime("%Y-%m-%dT%H:%M:%SZ") if fresh is not None else ""
    if declared.memory_gb is not None:
        requests["memory"] = _quantity_mib(declared.memory_gb * 1024)
    elif fresh is not None and fresh.ram_peak_mib:
        requests["memory"] = _quantity_mib(fresh.ram_peak_mib * (1 + options.margin))
        info.append(f"memory request from profiling of {when} (spec {fresh.spec_hash}): RAM peak "
                    f"{fresh.ram_peak_mib:g} MiB + {options.margin * 100:g} % margin")
    elif stale is not None:
        notes.append(f"the profiling result of spec {stale.spec_hash} is stale (the spec is now {spec.spec_hash}): "
                     "no memory request")
    if declared.cpus:
        requests["cpu"] = _cpus(declared.cpus)
    vram = declared.vram_gb
    if vram is None and fresh is not None and fresh.vram_peak_mib:
        vram = round(max(fresh.vram_peak_mib.values()) * (1 + options.margin) / 1024, 3)
    if vram:
        notes.append(f"VRAM {vram:g} GB per GPU: Kubernetes has no VRAM resource; pick nodes whose GPUs have it "
                     "(e.g. nodeSelector on the GPU feature discovery label nvidia.com/gpu.memory)")
    counts = _gpu_counts(spec, options, limits, notes)
    claims = None
    if options.gpus == "dra" and counts:
        requests_dra = [{"name": kind.split(".")[0] + "-gpu",
                         "exactly": {"deviceClassName": GPU_KINDS[kind], "allocationMode": "ExactCount",
                                     "count": count}} for kind, count in counts.items()]
        claims = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                  "metadata": {"name": f"{name}-gpus", **({"namespace": options.namespace} if options.namespace
                                                          else {})},
                  "spec": {"spec": {"devices": {"requests": requests_dra}}}}
    elif options.gpus == "device-plugin":
        for kind, count in counts.items():
            limits[kind] = count
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    if claims is not None:
        out["claims"] = [{"name": "gpus"}]
    return out, claims


def _gpu_counts(spec: EffectiveSpec, options: ExportOptions, limits: dict[str, Any], notes: list[str]
                ) -> dict[str, int]:
    """How many GPUs of each vendor the devices give (`cdi` mode: each CDI name as its own limit)."""
    picked: dict[str, list[str]] = {}
    for device in spec.devices:
        if device.startswith("/"):
            notes.append(f"device {device}: a host device path does not map (Kubernetes hands devices over "
                         "through a device plugin or DRA driver)")
            continue
        kind, _, which = device.partition("=")
        if options.gpus == "cdi":
            limits[device] = 1
            continue
        if kind not in GPU_KINDS:
            notes.append(f"device {device}: no Kubernetes resource for CDI kind {kind}")
            continue
        picked.setdefault(kind, []).append(which)
    counts: dict[str, int] = {}
    wanted = spec.resources.gpus
    for kind, whiches in picked.items():
        if wanted:
            counts[kind] = wanted
        elif "all" in whiches:
            counts[kind] = 1
            notes.append(f"device {kind}=all gives every GPU of a host; Kubernetes needs a count: 1 requested "
                         "(declare resources.gpus for more)")
        else:
            counts[kind] = len(whiches)
        pinned = [w for w in whiches if w != "all"]
        if pinned:
            notes.append(f"device {', '.join(f'{kind}={w}' for w in pinned)}: a pinned GPU does not map; the "
                         f"{'DRA driver' if options.gpus == 'dra' else 'device plugin'} picks the GPU")
    if wanted and not picked and options.gpus != "cdi":
        notes.append(f"resources.gpus {wanted} without GPU devices: no GPU requested")
    return counts


def _volumes(spec: EffectiveSpec, options: ExportOptions, labels: dict[str, str],
             claims: dict[str, dict[str, Any]], notes: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mounts: list[dict[str, Any]] = []
    pod_volumes: list[dict[str, Any]] = []
    for index, volume in enumerate(spec.volumes):
        entry = f"volume-{index}"
        mount: dict[str, Any] = {"name": entry, "mountPath": volume.target}
        if volume.read_only:
            mount["readOnly"] = True
        mounts.append(mount)
        if volume.options:
            notes.append(f"volume {volume.podman_spec()}: options {', '.join(volume.options)} do not map")
        if volume.source.startswith("/"):
            notes.append(f"volume {volume.podman_spec()}: a host path becomes hostPath: the directory must exist "
                         "on every node the pod may run on, and hostPath is refused by the restricted pod "
                         "security level; prefer a PersistentVolumeClaim")
            # No `type`: a host path may be a file or a directory; Ozwald (Podman) binds either.
            pod_volumes.append({"name": entry, "hostPath": {"path": volume.source}})
        else:
            claim = k8s_name(volume.source)
            pod_volumes.append({"name": entry, "persistentVolumeClaim": {"claimName": claim,
                                                                          **_read_only(volume)}})
            claims.setdefault(volume.source, _claim(volume, claim, options))
    if spec.shm_size is not None:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        pod_volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": _size(spec.shm_size)}})
    return mounts, pod_volumes


def _read_only(volume: Volume) -> dict[str, Any]:
    return {"readOnly": True} if volume.read_only else {}


def _claim(volume: Volume, name: str, options: ExportOptions) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = {"app.kubernetes.io/managed-by": MANAGED_BY}
    meta["annotations"] = {"ozwald.volume": volume.source}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}


def _size(size: str) -> str:
    unit = size[-1].lower() if size[-1].isalpha() else ""
    number = size[:-1] if unit else size
    return f"{int(number)}{_SIZE_UNITS[unit]}"


def _probes(spec: EffectiveSpec, notes: list[str]) -> dict[str, Any]:
    """`health` as a readinessProbe (Ozwald's `available`), and `start_timeout` as a startupProbe of the same
    check, failing after the same time. Without a health check there is nothing to probe."""
    if spec.health is None:
        if spec.start_timeout != DEFAULT_START_TIMEOUT:
            notes.append(f"start_timeout {spec.start_timeout:g} s without a health check: nothing to time "
                         "(minReadySeconds holds min_uptime)")
        return {}
    health = spec.health
    handler = _handler(health, notes)
    period = _whole_seconds(health.interval, "health.interval", notes)
    timeout = _whole_seconds(health.timeout, "health.timeout", notes)
    readiness = {**handler, "periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": health.retries}
    startup = {**handler, "periodSeconds": period, "timeoutSeconds": timeout,
               "failureThreshold": max(1, math.ceil(spec.start_timeout / period))}
    if health.start_period > spec.start_timeout:
        notes.append(f"health.start_period {health.start_period:g} s is longer than start_timeout "
                     f"{spec.start_timeout:g} s: the startupProbe gives up at start_timeout")
    if spec.min_uptime != DEFAULT_MIN_UPTIME:
        notes.append(f"min_uptime {spec.min_uptime:g} s: Ozwald applies it only without a health check; "
                     "not exported")
    return {"startupProbe": startup, "readinessProbe": readiness}


def _handler(health: Health, notes: list[str]) -> dict[str, Any]:
    if health.command is not None:
        if isinstance(health.command, str):
            return {"exec": {"command": ["/bin/sh", "-c", health.command]}}
        return {"exec": {"command": list(health.command)}}
    assert health.http is not None
    url = urllib.parse.urlsplit(health.http)
    scheme = url.scheme.upper()
    port = url.port or (443 if scheme == "HTTPS" else 80)
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    get: dict[str, Any] = {"path": path, "port": port, "scheme": scheme}
    host = url.hostname or ""
    if host and host not in _LOOPBACK:
        get["host"] = host
    if url.username or url.password:
        notes.append("health.http: credentials in the URL do not map to httpGet; not exported")
    return {"httpGet": get}


def _whole_seconds(value: float, what: str, notes: list[str]) -> int:
    seconds = max(1, math.ceil(value))
    if seconds != value:
        notes.append(f"{what} {value:g} s: probes count whole seconds; {seconds} s exported")
    return seconds


def _restart_notes(spec: EffectiveSpec, notes: list[str]) -> None:
    if spec.restart not in (DEFAULT_RESTART, "always"):
        notes.append(f"restart {spec.restart}: a Deployment's pod always restarts (restartPolicy Always)")
    if spec.restart_delay != DEFAULT_RESTART_DELAY:
        notes.append(f"restart_delay {spec.restart_delay:g} s: Kubernetes restarts with its own back-off")


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of an exported YAML text (comments and empty documents left out)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def names_of(objects: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]
