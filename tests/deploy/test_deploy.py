# SPDX-License-Identifier: AGPL-3.0-or-later
"""The deployment itself: Ozwald from this source tree, installed in a test host as ozwald.service.

Until ``ozwald serve`` exists, these prove the parts around it: the venv runs ``ozwald`` with the
guest's Python, Redis is locked down, systemd accepts the unit, the unit's sandbox allows everything
the provisioner does (tests/deploy/probe.py, run as the unit's ExecStart), and the start / kill -9 /
restart / health machinery works (with a stand-in HTTP server as ExecStart).
"""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.deploy.guest import (
    BIN_LINK,
    CONFIG_PATH,
    ENV_PATH,
    REDIS_CONFIG,
    REDIS_PORT,
    UNIT,
    UNIT_PATH,
    VENV,
    DeployError,
    ProvisionerDeployment,
    VenvInstaller,
    ozwald_wheel,
)
from tests.testhost.harness import TestHost

if TYPE_CHECKING:
    from tests.deploy.fixtures import Deploy


pytestmark = pytest.mark.testhost  # even the wheelhouse test: it may download from PyPI

PROBE = Path(__file__).with_name("probe.py")


def test_wheelhouse_targets_the_guest_python(ozwald_wheelhouse: Path) -> None:
    wheels = sorted(p.name for p in ozwald_wheelhouse.glob("*.whl"))
    assert ozwald_wheel(ozwald_wheelhouse).name.startswith("ozwald-")
    for name in wheels:
        python_tag, abi_tag, platform_tag = name[:-4].split("-")[-3:]
        assert platform_tag == "any" or "manylinux" in platform_tag, name
        assert abi_tag in ("none", "abi3", "cp313"), name
        assert python_tag.startswith(("py3", "py2.py3", "cp3")), name
    names = {name.split("-")[0].lower().replace("_", "-") for name in wheels}
    assert {"pyyaml", "pydantic", "pydantic-core", "hiredis", "jeepney", "waitress"} <= names
    assert "redis" not in names  # redis-py is a test dependency only
    assert not {"podman", "requests", "urllib3"} & names  # the Podman API is read with http.client (memory)


def test_ozwald_runs_from_the_venv(ozwald_deployment: ProvisionerDeployment) -> None:
    host = ozwald_deployment.host
    version = ozwald_deployment.ozwald("--version")
    assert version.returncode == 0, version.stderr
    wheel_version = ozwald_wheel(ozwald_deployment.installer.wheelhouse).name.split("-")[1]
    assert version.stdout.strip() == f"ozwald {wheel_version}"
    assert host.guest_path(BIN_LINK).is_symlink()
    assert str(host.guest_path(BIN_LINK).readlink()) == f"{VENV}/bin/ozwald"
    python = host.exec([f"{VENV}/bin/python", "-c", "import ozwald, sys; print(sys.version_info[:2], ozwald.__file__)"])
    assert python.stdout.startswith("(3, 13)"), python
    assert f"{VENV}/lib/python3.13/site-packages/ozwald/" in python.stdout
    print(f"venv: {ozwald_deployment.installer.timings}; deployment: {ozwald_deployment.timings}")


def test_check_config_accepts_the_deployed_settings(ozwald_deployment: ProvisionerDeployment) -> None:
    result = ozwald_deployment.ozwald("check_config")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{CONFIG_PATH}: OK" in result.stdout
    assert f"provisioners: {ozwald_deployment.provisioner}" in result.stdout


def test_check_config_refuses_a_bad_file(ozwald_deployment: ProvisionerDeployment) -> None:
    good = ozwald_deployment.host.read_file(CONFIG_PATH)
    ozwald_deployment.write_config(good.replace("type: redis", "type: memcached"))
    try:
        result = ozwald_deployment.ozwald("check_config")
    finally:
        ozwald_deployment.write_config(good)
    assert result.returncode == 2
    assert "cache.type" in result.stderr, result.stderr


def test_secret_files_are_private(ozwald_deployment: ProvisionerDeployment) -> None:
    host = ozwald_deployment.host
    for path in (ENV_PATH, CONFIG_PATH):
        assert stat.S_IMODE(host.guest_path(path).stat().st_mode) == 0o600, path
    assert f"OZWALD_SYSTEM_KEY='{ozwald_deployment.system_key}'" in host.read_file(ENV_PATH)
    owner = host.exec(["stat", "-c", "%a %U %G", REDIS_CONFIG], check=True).stdout.split()
    assert owner == ["640", "root", "redis"]


def test_redis_wants_a_password_and_listens_on_loopback_only(ozwald_deployment: ProvisionerDeployment) -> None:
    assert ozwald_deployment.redis_cli("PING").stdout.strip() == "PONG"
    anonymous = ozwald_deployment.redis_cli("PING", password="")
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    wrong = ozwald_deployment.redis_cli("PING", password="wrong")
    assert "WRONGPASS" in wrong.stdout + wrong.stderr or "invalid" in wrong.stdout + wrong.stderr
    bind = ozwald_deployment.redis_cli("CONFIG", "GET", "bind").stdout.split()
    assert bind[1:] == ["127.0.0.1", "-::1"]
    with pytest.raises(OSError), socket.create_connection((ozwald_deployment.host.ip, REDIS_PORT), timeout=2):
        pass
    exec_start = ozwald_deployment.host.systemctl("show", "redis-server.service", "-p", "ExecStart").stdout
    assert f"argv[]=/usr/bin/redis-server {REDIS_CONFIG} " in exec_start


def test_systemd_accepts_the_unit(ozwald_deployment: ProvisionerDeployment) -> None:
    host = ozwald_deployment.host
    # --man=no: Documentation= names man:ozwald(1), which only the package installs (and the guest has no man).
    verify = host.exec(["systemd-analyze", "verify", "--man=no", UNIT_PATH])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    complaints = [line for line in (verify.stdout + verify.stderr).splitlines() if "ozwald" in line]
    assert not complaints, "\n".join(complaints)
    props = ozwald_deployment.show(
        "LoadState", "Type", "Restart", "RestartUSec", "StateDirectory", "EnvironmentFiles", "Environment",
        "ProtectSystem", "ReadWritePaths", "ExecStart", "RestartPreventExitStatus", "RuntimeDirectory",
        "RuntimeDirectoryPreserve", "ConfigurationDirectory", "ExecReload", "Requires",
    )  # fmt: skip
    assert props["LoadState"] == "loaded"
    assert props["Type"] == "notify"
    assert "\nWatchdogSec=20s\n" in host.read_file(UNIT_PATH)  # the property reads infinity until it runs
    assert "argv[]=/bin/kill -HUP $MAINPID" in props["ExecReload"]  # show() keeps the last of the two lines
    assert "\nExecReload=/usr/bin/ozwald check_config --quiet\nExecReload=/bin/kill -HUP $MAINPID\n" in host.read_file(
        UNIT_PATH)
    assert "ozwald-redis.service" in props["Requires"].split()
    assert props["Restart"] == "always"
    assert props["RestartUSec"] == "1s"
    assert props["StateDirectory"] == "ozwald"
    assert props["EnvironmentFiles"].startswith(f"{ENV_PATH} (ignore_errors=yes)")
    assert f"OZWALD_CONFIG={CONFIG_PATH}" in props["Environment"].split()
    assert props["ProtectSystem"] == "strict"
    assert props["ReadWritePaths"].split() == ["/etc/containers/systemd", "/run/systemd/system", "/etc/systemd/system"]
    assert props["RuntimeDirectory"].split() == ["containers/systemd", "ozwald"]  # /run/ozwald: swap gates
    assert props["RuntimeDirectoryPreserve"] == "yes"
    assert props["ConfigurationDirectory"] == "containers/systemd"
    assert "path=/usr/bin/ozwald" in props["ExecStart"] and "argv[]=/usr/bin/ozwald serve" in props["ExecStart"]
    assert props["RestartPreventExitStatus"].split() == ["2"]


@pytest.fixture
def test_drop_in(ozwald_deployment: ProvisionerDeployment) -> Iterator[ProvisionerDeployment]:
    """Tests replace ExecStart= through the test drop-in; it goes again afterwards."""
    yield ozwald_deployment
    ozwald_deployment.host.systemctl("stop", UNIT, check=False)
    ozwald_deployment.remove_drop_in()


def test_the_unit_sandbox_allows_what_the_provisioner_does(test_drop_in: ProvisionerDeployment) -> None:
    deployment = test_drop_in
    host = deployment.host
    host.write_file("/opt/ozwald/probe.py", PROBE.read_text())
    # Both Quadlet directories missing: ExecStartPre= must create them before the sandbox needs them.
    host.exec(["rm", "-rf", "/etc/containers/systemd", "/run/containers/systemd"], check=True)
    deployment.write_drop_in(
        "[Service]\nType=oneshot\nRestart=no\nExecStart=\nExecStart=/opt/ozwald/venv/bin/python /opt/ozwald/probe.py\n"
    )
    started = host.systemctl("start", UNIT, check=False, timeout=120)
    result_path = host.guest_path("/var/lib/ozwald/probe.json")
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    failed = {name: outcome for name, outcome in results.items() if outcome != "ok"}
    assert started.returncode == 0 and results and not failed, (
        f"{failed or results}\n{started.stderr}\n{deployment.journal(lines=40)}"
    )
    assert len(results) >= 13
    mode = stat.S_IMODE(host.guest_path("/var/lib/ozwald").stat().st_mode)
    assert mode == 0o700


def test_start_kill_restart_with_a_stand_in_server(test_drop_in: ProvisionerDeployment) -> None:
    """Restart=always brings the service back after kill -9; the helpers see the new process."""
    deployment = test_drop_in
    host = deployment.host
    host.write_file("/var/lib/ozwald/www/health", '{"status": "healthy"}')
    # The stand-in reads the bind address and port from ozwald.env, as `ozwald serve` should.
    deployment.write_drop_in(
        "[Service]\nType=exec\nWatchdogSec=0\nExecStart=\nExecStart=/opt/ozwald/venv/bin/python -m http.server "
        "--bind ${OZWALD_API_HOST} --directory /var/lib/ozwald/www ${OZWALD_API_PORT}\n"
    )
    t0 = time.monotonic()
    deployment.start(timeout=30)
    first_start = time.monotonic() - t0
    assert deployment.health() == {"status": "healthy"}
    before = deployment.n_restarts()
    pid = deployment.kill("KILL")
    t1 = time.monotonic()
    new_pid = deployment.wait_restarted(pid, timeout=30)
    back_after = time.monotonic() - t1
    assert new_pid != pid
    assert deployment.n_restarts() == before + 1
    assert 0.9 <= back_after < 10, back_after  # RestartSec=1
    status, body = deployment.request("GET", "/health", auth=False)
    assert (status, body) == (200, {"status": "healthy"})
    # RuntimeDirectoryPreserve=yes: stopping Ozwald leaves the runtime Quadlet units alone.
    host.write_file("/run/containers/systemd/ozwald-sentinel.container", "[Container]\n")
    deployment.stop()
    assert host.guest_path("/run/containers/systemd/ozwald-sentinel.container").exists()
    host.guest_path("/run/containers/systemd/ozwald-sentinel.container").unlink()
    assert deployment.show("ActiveState")["ActiveState"] == "inactive"
    with pytest.raises(DeployError):
        deployment.wait_healthy(timeout=1)
    print(f"stand-in: first start {first_start:.2f} s, back after kill -9 in {back_after:.2f} s")


def test_exit_status_2_is_not_restarted(test_drop_in: ProvisionerDeployment) -> None:
    """An operator error (status 2, e.g. settings that do not validate) fails the unit for good."""
    deployment = test_drop_in
    good = deployment.host.read_file(CONFIG_PATH)
    deployment.write_config(good.replace("type: redis", "type: memcached"))
    try:
        deployment.write_drop_in("[Service]\nType=exec\nExecStart=\nExecStart=/usr/bin/ozwald check_config\n")
        deployment.host.systemctl("start", UNIT)
        deadline = time.monotonic() + 20
        while deployment.show("ActiveState")["ActiveState"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        props = deployment.show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
        assert props == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "2", "NRestarts": "0"}
        assert "cache.type" in deployment.journal(lines=20)
    finally:
        deployment.write_config(good)


def test_a_second_host_gets_the_cached_venv(
    ozwald_deployment: ProvisionerDeployment,
    testhost_factory: Callable[[], TestHost],
    ozwald_venv: VenvInstaller,
    ozwald_deploy: Deploy,
) -> None:
    builds = ozwald_venv.builds
    other = ozwald_deploy(testhost_factory())
    assert ozwald_venv.builds == builds, "the venv was rebuilt instead of unpacked"
    assert "unpack_s" in ozwald_venv.timings
    version = other.ozwald("--version")
    assert version.returncode == 0 and version.stdout.startswith("ozwald "), version
    assert other.system_key != ozwald_deployment.system_key
    print(f"cached venv install: {ozwald_venv.timings}; deployment: {other.timings}")
