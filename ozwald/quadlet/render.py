# SPDX-License-Identifier: AGPL-3.0-or-later
"""Render an effective spec into a Quadlet `.container` unit.

The output is a pure function of (spec, instance, target Podman version): the same input always gives
the same bytes, so a changed file always means a changed service.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ozwald import __version__
from ozwald.config.model import Health
from ozwald.config.resolve import EffectiveSpec
from ozwald.config.values import check_name
from ozwald.errors import Exit, OzwaldError
from ozwald.quadlet.escape import quote_word, quote_words, raw_json_array, raw_token
from ozwald.quadlet.keys import NEWEST_KNOWN, QUADLET_MIN, Version, format_version, since
from ozwald.quadlet.naming import container_name, env_filename, unit_filename, unit_name
from ozwald.quadlet.on_demand import CompanionUnit, OnDemandUnits, render_on_demand

# unit_filename and unit_name live in ozwald.quadlet.naming; re-exported for existing importers.
__all__ = ["RenderError", "RenderedUnit", "render_unit", "unit_filename", "unit_name"]

STOP_GRACE_S = 15  # systemd must outwait `podman rm --time <stop_timeout>`, or it kills the cleanup
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL_S = 300
SLEEP = "/usr/bin/sleep"


class RenderError(OzwaldError, ValueError):
    """The spec cannot be rendered for the target Podman; the message names the key and version."""

    exit_status = Exit.USAGE
    http_status = 400


@dataclass(frozen=True)
class RenderedUnit:
    """A unit file, and the secret environment file it names (None without secrets); neither repr shows."""

    instance: str
    filename: str
    unit_name: str
    text: str = field(repr=False)
    spec_hash: str
    warnings: tuple[str, ...] = ()
    env_file: str | None = field(default=None, repr=False)
    on_demand: OnDemandUnits | None = None  # its socket and proxy, for an on-demand instance
    swap_gate: CompanionUnit | None = None  # the drop-in that gates its start, when it swaps with others

    @property
    def companions(self) -> tuple[CompanionUnit, ...]:
        """The plain systemd units (and drop-in) written beside the Quadlet file."""
        units = () if self.on_demand is None else (self.on_demand.socket, self.on_demand.proxy)
        return units + ((self.swap_gate,) if self.swap_gate is not None else ())


@dataclass
class _Sections:
    target: Version
    unit: list[str] = field(default_factory=list)
    container: list[str] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    install: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def container_key(self, key: str, value: str, value_tag: str | None = None) -> None:
        needed = since("Container", key, value_tag)
        if self.target < needed:
            shown = f"{key}={value_tag}" if value_tag else key
            raise RenderError(f"[Container] {shown} needs Podman {format_version(needed)} or newer; "
                              f"the target is Podman {format_version(self.target)}")
        self.container.append(f"{key}={value}")

    def supports(self, key: str, value_tag: str | None = None) -> bool:
        return self.target >= since("Container", key, value_tag)


def render_unit(spec: EffectiveSpec, instance: str, podman_version: Version = NEWEST_KNOWN) -> RenderedUnit:
    """The `.container` unit for one instance of a container service."""
    check_name(instance)
    if spec.type != "container" or spec.image is None:
        raise RenderError(f"service {spec.service!r} is of type {spec.type!r}: only container services become units")
    if podman_version < QUADLET_MIN:
        raise RenderError(f"Quadlet needs Podman {format_version(QUADLET_MIN)} or newer; "
                          f"the target is Podman {format_version(podman_version)}")
    out = _Sections(target=podman_version)
    on_demand = None
    if spec.on_demand is not None:
        problem = spec.on_demand.port_problem(spec.ports)  # check_config refuses it too, naming the line
        if problem is not None:
            raise RenderError(f"service {spec.service!r}: {problem}")
        on_demand = render_on_demand(instance, spec.on_demand, spec.ports[0], spec.service, spec.persistent)
    out.unit += [
        f"Description=Ozwald instance {instance} (service {spec.service}, variety {spec.variety or '-'}, "
        f"profile {spec.profile or '-'})",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_S}",
        f"StartLimitBurst={START_LIMIT_BURST}",
    ]
    if on_demand is not None:
        out.unit += [
            # Started by its proxy's Wants=, stopped once the proxy exits for idleness.
            "StopWhenUnneeded=yes",
            f"# On demand: socket {on_demand.socket.filename}, proxy {on_demand.proxy.filename} "
            f"({on_demand.digest})",
        ]
    _container(out, spec, instance, on_demand)
    out.service += [
        # On demand, the next connection is the retry: systemd restarting a container nobody waits for would
        # only fight StopWhenUnneeded.
        f"Restart={'no' if on_demand is not None else spec.restart}",
        f"RestartSec={_seconds(spec.restart_delay)}",
        f"TimeoutStartSec={_seconds(spec.start_timeout)}",
        f"TimeoutStopSec={int(spec.stop_timeout) + STOP_GRACE_S}",
        # podman exits 143 when the container ends on SIGTERM; that is a clean stop, not a failure.
        "SuccessExitStatus=143",
    ]
    if spec.health is None and spec.min_uptime > 0:
        # Without a health check, systemd would call the unit active as soon as the container started, even
        # one that exits a second later. Holding the start in ExecStartPost makes "active" (and so the end
        # of the start job, and `available`) mean "up for min_uptime"; an exit meanwhile fails the start.
        out.service.append(f"ExecStartPost={SLEEP} {_seconds(spec.min_uptime)}")
    if spec.persistent and on_demand is None:  # on demand, the socket comes back after a reboot, not this
        out.install.append("WantedBy=multi-user.target default.target")
    text = _assemble(out, instance)
    return RenderedUnit(instance=instance, filename=unit_filename(instance), unit_name=unit_name(instance),
                        text=text, spec_hash=spec.spec_hash, warnings=tuple(out.warnings),
                        env_file=_secret_env_file(spec), on_demand=on_demand)


def _secret_env_file(spec: EffectiveSpec) -> str | None:
    """Secret values go to a 0600 file Podman reads (`--env-file`), never into the unit: Quadlet copies
    `Environment=` into the generated service's command line, which any local user can read."""
    lines = []
    for key, value in spec.environment:
        if key in spec.secret_keys:
            if "\n" in value or "\r" in value:
                raise RenderError(f"the secret value of {key} spans several lines; an environment file "
                                  "holds one line per variable")
            lines.append(f"{key}={value}\n")
    return "".join(lines) or None


def _container(out: _Sections, spec: EffectiveSpec, instance: str, on_demand: OnDemandUnits | None) -> None:
    assert spec.image is not None
    out.container_key("Image", raw_token(spec.image))
    out.container_key("ContainerName", container_name(instance))
    labels = [
        ("ozwald.managed", "true"),
        ("ozwald.instance", instance),
        ("ozwald.service", spec.service),
        ("ozwald.variety", spec.variety or ""),
        ("ozwald.profile", spec.profile or ""),
        ("ozwald.spec-hash", spec.spec_hash),
        *spec.labels,
    ]
    for key, value in labels:
        out.container_key("Label", quote_word(f"{key}={value}"))
    for key, value in spec.environment:
        if key not in spec.secret_keys:
            out.container_key("Environment", quote_word(f"{key}={value}"))
    if spec.secret_keys:
        out.container_key("EnvironmentFile", raw_token(env_filename(instance)))
    for device in spec.devices:
        # Never the optional '-' prefix: on a CDI name it silently drops the GPU.
        out.container_key("AddDevice", raw_token(device))
    for port in (on_demand.backend,) if on_demand is not None else spec.ports:
        out.container_key("PublishPort", raw_token(port.podman_spec()))
    for volume in spec.volumes:
        out.container_key("Volume", raw_token(volume.podman_spec()))
    if spec.shm_size is not None:
        out.container_key("ShmSize", raw_token(spec.shm_size))
    if spec.entrypoint is not None:
        out.container_key("Entrypoint", raw_json_array(spec.entrypoint))
    if spec.command is not None:
        out.container_key("Exec", quote_words(spec.command))
    if spec.health is not None:
        _health(out, spec.health)
    if out.supports("StopTimeout"):
        out.container_key("StopTimeout", str(int(spec.stop_timeout)))
    else:
        out.warnings.append(
            f"Podman {format_version(out.target)} has no StopTimeout (5.0+): podman's default stop timeout "
            f"(10 s) applies instead of {_seconds(spec.stop_timeout)} s"
        )


def _health(out: _Sections, health: Health) -> None:
    out.container_key("HealthCmd", raw_json_array(health_command(health)))
    out.container_key("HealthInterval", _seconds(health.interval) + "s")
    out.container_key("HealthTimeout", _seconds(health.timeout) + "s")
    out.container_key("HealthRetries", str(health.retries))
    if health.start_period:
        out.container_key("HealthStartPeriod", _seconds(health.start_period) + "s")
    if out.supports("Notify", "healthy"):
        out.container_key("Notify", "healthy", value_tag="healthy")
    else:
        out.warnings.append(
            f"Podman {format_version(out.target)} has no Notify=healthy (5.0+): the unit becomes active when the "
            "container starts, and readiness is read from the container's health state instead"
        )


_PYTHON_PROBE = (
    "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read(1)"
)


def health_command(health: Health) -> list[str]:
    """The JSON array given to Podman's `--health-cmd`.

    Podman (5.4) keeps an array of two or more words as an exec-form command, word for word, but
    re-splits the words of an array that starts with "CMD" on whitespace, and runs a one-word array
    through the shell. So exec form is written without "CMD", and a one-word command is quoted for the
    shell, which then runs exactly that word.
    """
    if health.command is not None:
        if isinstance(health.command, str):
            return ["CMD-SHELL", health.command]
        if len(health.command) == 1:
            return ["CMD-SHELL", shlex.quote(health.command[0])]
        return list(health.command)
    assert health.http is not None
    url = health.http
    timeout = _seconds(health.timeout)
    curl = ["curl", "-fsS", "-o", "/dev/null", "--max-time", timeout, url]
    wget = ["wget", "-q", "-O", "/dev/null", "-T", timeout, url]
    python = ["python3", "-c", _PYTHON_PROBE, url, timeout]
    if health.probe == "curl":
        return curl
    if health.probe == "wget":
        return wget
    if health.probe == "python3":
        return python
    chain = " || ".join(shlex.join(tool) for tool in (curl, wget, python))
    return ["CMD-SHELL", chain]


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _assemble(out: _Sections, instance: str) -> str:
    lines = [
        f"# Generated by Ozwald {__version__} for instance {instance}.",
        "# Do not edit: Ozwald rewrites this file whenever the desired state changes.",
        "",
        "[Unit]",
        *out.unit,
        "",
        "[Container]",
        *out.container,
        "",
        "[Service]",
        *out.service,
    ]
    if out.install:
        lines += ["", "[Install]", *out.install]
    return "\n".join(lines) + "\n"
