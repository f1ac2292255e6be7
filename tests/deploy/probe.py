# SPDX-License-Identifier: AGPL-3.0-or-later
"""Run INSIDE a test host, as ozwald.service's ExecStart, to prove its sandbox allows what Ozwald does.

Until ``ozwald serve`` exists this stands in for it: with the unit's own hardening, environment file
and settings path, it uses Ozwald's modules from the deployed venv to do each thing the provisioner
needs: write Quadlet files into both Quadlet directories (and on-demand units into systemd's two),
make systemd reload and start the unit Quadlet generates (over D-Bus, as root), ask Podman over its
socket, read the journal, talk to the password-protected Redis from the settings file, read host
resources, write its state directory.
It also checks that the rest of the file system is read-only. The outcome is written as JSON to
``/var/lib/ozwald/probe.json``: ``{"check name": "ok" | "error text"}``.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ozwald.config import find_config_path, load_settings
from ozwald.podman.inspector import PodmanInspector
from ozwald.state.redis_conn import connect
from ozwald.systemd import SystemdClient
from ozwald.systemd.journal import container_log_tail

RESULT = Path("/var/lib/ozwald/probe.json")
UNIT_NAME = "ozwald-probe"
# A tiny container: the busybox image baked into every test host, sleeping until stopped (under an
# init, so that SIGTERM stops it at once: sleep as PID 1 ignores it).
QUADLET = """\
[Container]
Image=localhost/ozwald-busybox:latest
ContainerName=ozwald-probe
Exec=sleep 600
Network=none
RunInit=yes

[Service]
Restart=no
"""

results: dict[str, str] = {}


def check(name: str) -> Callable[[Callable[[], object]], None]:
    """Run the decorated function now and record "ok" or the error it raised."""

    def run(func: Callable[[], object]) -> None:
        try:
            outcome = func()
            results[name] = "ok" if outcome is None or outcome is True else f"unexpected: {outcome!r}"
        except Exception as err:
            results[name] = f"{type(err).__name__}: {err}"

    return run


def write_and_remove(directory: str) -> None:
    path = Path(directory) / f"{UNIT_NAME}-write-test.tmp"
    path.write_text("x")
    path.unlink()


def must_be_read_only(path: str) -> bool:
    try:
        Path(path).write_text("x")
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
            return True
        raise
    Path(path).unlink()
    return False


@check("quadlet_runtime_dir_writable")
def _runtime() -> None:
    write_and_remove("/run/containers/systemd")


@check("quadlet_persistent_dir_writable")
def _persistent() -> None:
    write_and_remove("/etc/containers/systemd")


@check("systemd_runtime_dir_writable")  # an on-demand instance's socket and proxy units
def _systemd_runtime() -> None:
    write_and_remove("/run/systemd/system")


@check("systemd_persistent_dir_writable")  # the same, for a persistent instance
def _systemd_persistent() -> None:
    write_and_remove("/etc/systemd/system")


@check("state_dir_writable")
def _state() -> None:
    write_and_remove("/var/lib/ozwald")


@check("usr_read_only")
def _usr() -> bool:
    return must_be_read_only("/usr/lib/ozwald-probe")


@check("etc_ozwald_read_only")
def _etc() -> bool:
    return must_be_read_only("/etc/ozwald/probe")


@check("environment")
def _environment() -> bool | str:
    have = {key: bool(os.environ.get(key)) for key in ("OZWALD_CONFIG", "OZWALD_SYSTEM_KEY", "OZWALD_PROVISIONER")}
    return all(have.values()) or f"missing: {have}"


@check("redis_from_settings")
def _redis() -> None:
    settings = load_settings(find_config_path(None))
    name = os.environ["OZWALD_PROVISIONER"]
    provisioner = next(p for p in settings.provisioners if p.name == name)
    client = connect(provisioner.cache.parameters)
    client.set("ozwald:probe", "1")
    if client.get("ozwald:probe") != "1":
        raise RuntimeError("read back something else")
    client.delete("ozwald:probe")


@check("podman_socket")
def _podman() -> bool | str:
    with PodmanInspector() as podman:
        return (podman.ping() and bool(podman.version())) or "no ping"


@check("host_resources")
def _resources() -> None:
    import psutil

    if not (psutil.cpu_count() and psutil.virtual_memory().total and list(psutil.process_iter(["pid"]))):
        raise RuntimeError("psutil saw nothing")


@check("systemd_quadlet_start_stop")
def _quadlet() -> bool | str:
    unit_file = Path("/run/containers/systemd") / f"{UNIT_NAME}.container"
    service = f"{UNIT_NAME}.service"
    with SystemdClient() as systemd:
        unit_file.write_text(QUADLET)
        try:
            systemd.reload()
            outcome = systemd.start_unit(service, timeout=60)
            outcome.raise_for_result()
            state = systemd.unit_state(service)
            if state.active_state != "active":
                return f"{service} is {state.active_state}/{state.sub_state}"
            systemd.stop_unit(service, timeout=60).raise_for_result()
        finally:
            unit_file.unlink(missing_ok=True)
            systemd.reload()
    return True


@check("journal_readable")
def _journal() -> bool | str:
    # container_log_tail swallows errors and returns []; run journalctl the same way and check it works.
    import subprocess

    out = subprocess.run(["journalctl", "--no-pager", "-n", "1", "-q"], capture_output=True, text=True, check=False)
    container_log_tail(UNIT_NAME)
    return out.returncode == 0 or f"journalctl: {out.returncode} {out.stderr.strip()}"


RESULT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
print(json.dumps(results, sort_keys=True), flush=True)
sys.exit(0 if all(value == "ok" for value in results.values()) else 1)
