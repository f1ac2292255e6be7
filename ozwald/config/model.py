# SPDX-License-Identifier: AGPL-3.0-or-later
"""The settings file, as typed, immutable models.

The shape follows the external contract (hosts, provisioners, services with varieties and profiles)
and adds the container keys real AI services need. Every container key may appear at the service,
variety and profile level; `None` means "not set here", so that resolution can tell an explicit empty
value from an absent one.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ozwald.config.keys import Key, Merge, keys_of
from ozwald.config.values import Duration, EnvKey, ImageRef, LabelKey, Name, Size, Text, env_scalar

_CDI_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*/[a-z0-9][a-z0-9._-]*=[A-Za-z0-9][A-Za-z0-9._:-]*$")
_DEVICE_PATH = re.compile(r"^/dev/[A-Za-z0-9._/-]+(:/dev/[A-Za-z0-9._/-]+)?(:[rwm]{1,3})?$")
_HOST_PATH = re.compile(r"^/[A-Za-z0-9._/@+,=-]*$")
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VOLUME_OPTIONS = {"ro", "rw", "z", "Z", "U", "O", "copy", "nocopy", "shared", "slave", "private", "rshared",
                   "rslave", "rprivate", "nosuid", "nodev", "noexec", "suid", "dev", "exec"}
_URL = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=-]+$")


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(Strict):
    name: Name
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address


class RedisParameters(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=6379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)
    password: SecretStr | None = None
    unix_socket: str | None = None


class Cache(Strict):
    type: Literal["redis"]
    parameters: RedisParameters = RedisParameters()


class ApiSettings(Strict):
    """Where the provisioner's HTTP API listens: loopback unless the operator opens it up."""

    bind: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address("127.0.0.1")
    port: int = Field(default=8000, ge=1, le=65535)
    threads: int = Field(default=8, ge=1, le=256)
    metrics: bool = True  # GET /metrics (Prometheus); false: not served, and prometheus_client is not loaded


class ProfilingSettings(Strict):
    """The profiling queue: how long a profiled instance is held once ready, and the margin admission adds
    to a measured footprint (0.1: +10 %) to cover run-to-run variation."""

    hold: Duration = 10.0
    margin: float = Field(default=0.1, ge=0, le=10)
    sample_interval: Duration = Field(default=0.25, gt=0)


class AdmissionSettings(Strict):
    """Capacity admission counts on: the host's RAM less `reserve_memory_gb` (the OS, Redis, page cache)."""

    reserve_memory_gb: float = Field(default=0.0, ge=0)


class Provisioner(Strict):
    name: Name
    host: Name
    cache: Cache
    api: ApiSettings = ApiSettings()
    state_dir: str = "/var/lib/ozwald"
    resync_interval: Duration = 60.0
    profiling: ProfilingSettings = ProfilingSettings()
    admission: AdmissionSettings = AdmissionSettings()


class Port(Strict):
    """A published port, like `podman run --publish`."""

    container: int = Field(ge=1, le=65535)
    host: int | None = Field(default=None, ge=1, le=65535)
    host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"container": value, "host": value}
        if not isinstance(value, str):
            return value
        text, _, protocol = value.partition("/")
        parts = text.rsplit(":", 2)
        try:
            if len(parts) == 1:
                out: dict[str, Any] = {"container": int(parts[0]), "host": int(parts[0])}
            elif len(parts) == 2:
                out = {"host": int(parts[0]), "container": int(parts[1])}
            else:
                host_ip = parts[0].strip("[]")
                out = {"host_ip": host_ip, "host": int(parts[1]) if parts[1] else None, "container": int(parts[2])}
        except ValueError:
            raise ValueError(f"invalid port {value!r}: use [ip:][host:]container[/protocol]") from None
        if protocol:
            out["protocol"] = protocol
        return out

    def podman_spec(self) -> str:
        ip = ""
        if self.host_ip is not None:
            ip = f"[{self.host_ip}]" if self.host_ip.version == 6 else str(self.host_ip)
        host = "" if self.host is None else str(self.host)
        prefix = f"{ip}:{host}:" if ip else (f"{host}:" if host else "")
        return f"{prefix}{self.container}/{self.protocol}"


class Volume(Strict):
    """A bind mount (absolute host path) or a named Podman volume."""

    source: str
    target: str
    read_only: bool = False
    options: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"invalid volume {value!r}: use source:target[:options]")
        options = tuple(o for o in parts[2].split(",") if o) if len(parts) == 3 else ()
        read_only = "ro" in options
        return {"source": parts[0], "target": parts[1], "read_only": read_only,
                "options": tuple(o for o in options if o not in ("ro", "rw"))}

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("/"):
            if not _HOST_PATH.fullmatch(value):
                raise ValueError(f"invalid host path {value!r}: use A-Z a-z 0-9 and . _ / @ + , = -")
        elif not _VOLUME_NAME.fullmatch(value):
            raise ValueError(f"invalid volume source {value!r}: an absolute host path or a volume name")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value.startswith("/") or not _HOST_PATH.fullmatch(value):
            raise ValueError(f"invalid container path {value!r}: an absolute path of A-Z a-z 0-9 . _ / @ + , = -")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [o for o in value if o not in _VOLUME_OPTIONS]
        if unknown:
            raise ValueError(f"unknown volume option(s) {', '.join(unknown)}")
        if "ro" in value or "rw" in value:
            raise ValueError("use read_only instead of ro/rw in options")
        return value

    def podman_spec(self) -> str:
        options: tuple[str, ...] = ("ro",) if self.read_only else ()
        options += self.options
        return f"{self.source}:{self.target}" + (f":{','.join(options)}" if options else "")


def check_device(value: str) -> str:
    if value.startswith("-"):
        raise ValueError(f"device {value!r}: the optional '-' prefix silently drops the device; remove it")
    if not (_CDI_NAME.fullmatch(value) or _DEVICE_PATH.fullmatch(value)):
        raise ValueError(
            f"invalid device {value!r}: use a CDI name (nvidia.com/gpu=0, amd.com/gpu=all) "
            "or a host device path (/dev/dri/renderD128[:/dev/dri/renderD128][:rwm])"
        )
    return value


class Health(Strict):
    """Readiness: a command run inside the container, or an HTTP URL probed from inside it."""

    command: tuple[Text, ...] | Text | None = None
    http: str | None = None
    # How to probe `http` inside the container: a shell chain (curl, then wget, then python3), or one tool.
    probe: Literal["auto", "curl", "wget", "python3"] = "auto"
    interval: Duration = 10.0
    start_period: Duration = 0.0
    retries: int = Field(default=3, ge=1)
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _exactly_one(self) -> Health:
        if (self.command is None) == (self.http is None):
            raise ValueError("set exactly one of health.command or health.http")
        return self

    @field_validator("command")
    @classmethod
    def _command(cls, value: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        if value is not None and len(value) == 0:
            raise ValueError("health.command cannot be empty")
        if isinstance(value, tuple) and any("\x00" in a for a in value):
            raise ValueError("health.command cannot contain NUL bytes")
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("health.command cannot contain NUL bytes")
        return value

    @field_validator("http")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not _URL.fullmatch(value):
            raise ValueError(f"invalid health URL {value!r}: use http(s)://host:port/path")
        return value


class Resources(Strict):
    """Declared needs, used for admission: the service will not be started where these do not fit."""

    vram_gb: float | None = Field(default=None, ge=0)
    memory_gb: float | None = Field(default=None, ge=0)
    gpus: int | None = Field(default=None, ge=0)
    cpus: float | None = Field(default=None, ge=0)


class OnDemand(Strict):
    """Scale to zero: a systemd socket listens on the instance's published port and the container runs only
    while connections come (see the README's On-demand services)."""

    # Fields that decide what Ozwald does, not what runs: outside the spec hash, so a change restarts nothing.
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"swap_drain"})

    enabled: bool = True
    idle_stop: Duration = Field(default=600.0, gt=0)
    # The loopback port the container publishes on, behind the proxy; None: the public port + 10000 (or
    # - 10000 above 55535).
    backend_port: int | None = Field(default=None, ge=1, le=65535)
    # How long the start of an instance it swaps with waits for its requests in flight before stopping it.
    swap_drain: Duration = Field(default=30.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    def backend_for(self, public_port: int) -> int:
        if self.backend_port is not None:
            return self.backend_port
        return public_port + 10000 if public_port <= 55535 else public_port - 10000

    def port_problem(self, ports: tuple[Port, ...]) -> str | None:
        """Why these published ports cannot be served on demand, or None: the socket listens on exactly one TCP
        port with a host port and proxies it to the container on another."""
        why = "an on-demand service needs exactly one published TCP port with a host port (its socket listens " \
              "there and proxies to the container)"
        if len(ports) != 1:
            return f"{why}; it publishes {len(ports)}"
        port = ports[0]
        if port.protocol != "tcp" or port.host is None:
            return f"{why}; it publishes {port.podman_spec()}"
        if self.backend_for(port.host) == port.host:
            return f"on_demand.backend_port {port.host} is the public port; the container needs another one " \
                   "behind the proxy"
        return None


RestartPolicy = Literal["no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always"]


def _split_command(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"cannot split command {value!r}: {exc}") from None
    return value


class EnvSource(Strict):
    """An environment value written as a mapping: secret unless `secret: false`.

    `value` is inline (kept as a SecretStr, so no repr, dump or log shows it), `file` a host file read when
    the spec is resolved (trailing newline dropped), `credential` a systemd credential of the provisioner's
    own unit (`LoadCredential=`/`LoadCredentialEncrypted=`, read from `$CREDENTIALS_DIRECTORY`).
    """

    value: SecretStr | None = None
    file: str | None = None
    credential: Name | None = None
    secret: bool = True

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvSource:
        if sum(x is not None for x in (self.value, self.file, self.credential)) != 1:
            raise ValueError("set exactly one of value, file or credential")
        if self.value is not None:
            text = self.value.get_secret_value()
            if "\x00" in text:
                raise ValueError("value cannot contain NUL bytes")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("value is not valid Unicode") from None
        if self.file is not None and not self.file.startswith("/"):
            raise ValueError("file must be an absolute path")
        return self

    @field_validator("value", mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        return value if isinstance(value, str | SecretStr) else env_scalar(value)


def _env_entry(value: Any) -> Any:
    if isinstance(value, dict):
        try:
            return EnvSource.model_validate(value)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]  # messages only: `input` may be the secret itself
            where = ".".join(str(p) for p in first["loc"])
            what = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
            raise ValueError("a mapping environment value is {value|file|credential: ..., secret: true/false}: "
                             f"{where + ': ' if where else ''}{what}") from None
    if isinstance(value, EnvSource):
        return value
    return env_scalar(value)


EnvEntry = Annotated[str | EnvSource, BeforeValidator(_env_entry)]


class Layer(Strict):
    """The keys allowed at every level: service (base), variety and profile; see `ozwald.config.keys`."""

    image: Annotated[ImageRef | None, Key("image reference")] = None
    environment: Annotated[dict[EnvKey, EnvEntry] | None, Key(
        "env map; values are scalars and keep their spelling (`true`, `0.9`, `\"\"`), or secrets: "
        "`{value: ...}`, `{file: /path}` or `{credential: name}` (see Secrets)",
        merge=Merge.MAP, container_only=False)] = None
    command: Annotated[tuple[Text, ...] | None, Key("list of arguments (a string is split like a shell would)")] = None
    entrypoint: Annotated[tuple[Text, ...] | None, Key("list of arguments, like `command`")] = None
    ports: Annotated[tuple[Port, ...] | None, Key(
        "`[ip:][host:]container[/proto]` or `{container, host, host_ip, protocol}`", default=())] = None
    volumes: Annotated[tuple[Volume, ...] | None, Key(
        "`source:target[:options]` or `{source, target, read_only, options}`; source is an absolute path "
        "or a volume name", default=())] = None
    devices: Annotated[tuple[str, ...] | None, Key(
        "CDI names (`nvidia.com/gpu=0`, `nvidia.com/gpu=GPU-<uuid>`) or `/dev/…` paths; default by variety "
        "name (see below)")] = None
    health: Annotated[Health | None, Key(
        "`{command: [...] or \"shell string\"}` or `{http: URL, probe: auto/curl/wget/python3}`, with "
        "`interval`, `start_period`, `retries`, `timeout`. A list runs word for word; a one-word list, a string "
        "and `probe: auto` (curl, then wget, then python3) need `/bin/sh` in the image")] = None
    restart: Annotated[RestartPolicy | None, Key(
        "systemd `Restart=` (default `on-failure`); after 5 restarts in 5 min systemd gives up and the "
        "instance is `failed`", default="on-failure")] = None
    restart_delay: Annotated[Duration | None, Key("systemd `RestartSec=` (default 2 s)", default=2.0)] = None
    start_timeout: Annotated[Duration | None, Key(
        "duration (`90`, `30s`, `20m`); default 15 min because models load slowly", default=900.0)] = None
    stop_timeout: Annotated[Duration | None, Key("duration (default 30 s)", default=30.0)] = None
    min_uptime: Annotated[Duration | None, Key(
        "duration (default 5 s): a container without a health check counts as ready only after it has "
        "stayed up this long", default=5.0)] = None
    shm_size: Annotated[Size | None, Key("e.g. `16g`")] = None
    labels: Annotated[dict[LabelKey, Text] | None, Key(
        "extra container labels (`ozwald.*` is reserved)", merge=Merge.MAP, container_only=False)] = None
    resources: Annotated[Resources | None, Key(
        "declared needs for admission: `vram_gb`, `memory_gb`, `gpus`, `cpus`", merge=Merge.FIELDS,
        container_only=False, default=Resources())] = None
    persistent: Annotated[bool | None, Key("`true` to survive a reboot (adds `[Install]`)", default=False)] = None
    on_demand: Annotated[OnDemand | None, Key(
        "`true`, or `{idle_stop: 10m, backend_port: N, swap_drain: 30s}`: a socket listens on the one published "
        "TCP port and the container starts on the first connection and stops after `idle_stop` (default 10 min) "
        "without one; `swap_drain` (default 30 s): how long a swap waits for its requests in flight; `false` "
        "turns it off (see On-demand services)", hashed_when_set=True)] = None

    @field_validator("command", "entrypoint", mode="before")
    @classmethod
    def _commands(cls, value: Any) -> Any:
        value = _split_command(value)
        if isinstance(value, list | tuple):
            if len(value) == 0:
                raise ValueError("cannot be empty")
            for item in value:
                if not isinstance(item, str):
                    raise ValueError(f"arguments must be strings, not {type(item).__name__} ({item!r})")
                if "\x00" in item:
                    raise ValueError("arguments cannot contain NUL bytes")
        return value

    @field_validator("command", mode="after")
    @classmethod
    def _exec_words(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # Quadlet copies `Exec=` into systemd's ExecStart=, which drops empty words and reads a lone
        # `;` as a command separator. Refusing both keeps the container's argv exactly as configured.
        for item in value or ():
            if item == "":
                raise ValueError("empty arguments are dropped by Quadlet; use --flag=\"\" or remove it")
            if item == ";":
                raise ValueError("a lone ';' argument is a command separator for systemd; quote it into a word")
        return value

    @field_validator("devices", mode="after")
    @classmethod
    def _devices(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            for device in value:
                check_device(device)
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v if isinstance(v, str) else _label_scalar(v)) for k, v in value.items()}
        return value


def _label_scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return value


class Variety(Layer):
    """Hardware-specific image, env and devices (e.g. nvidia, amdgpu, cpu-only)."""


class Profile(Layer):
    """A named overlay that changes runtime behaviour (e.g. fast-gpu, no-gpu)."""


ServiceType = Literal["container", "source-files"]
LAYER_KEYS = keys_of(Layer)
CONTAINER_ONLY_KEYS = tuple(name for name, key in LAYER_KEYS.items() if key.container_only)


class Service(Layer):
    name: Name
    type: ServiceType = "container"
    description: Text | None = None
    varieties: dict[Name, Variety] = Field(default_factory=dict)
    profiles: dict[Name, Profile] = Field(default_factory=dict)


class Settings(Strict):
    hosts: tuple[Host, ...] = ()
    provisioners: tuple[Provisioner, ...] = ()
    services: tuple[Service, ...] = ()

    @field_validator("hosts", "provisioners", "services", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return () if value is None else value  # `services:` with nothing under it is an empty list

    def service(self, name: str) -> Service | None:
        for service in self.services:
            if service.name == name:
                return service
        return None
