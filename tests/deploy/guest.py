# SPDX-License-Identifier: AGPL-3.0-or-later
"""Deploy Ozwald into a test host the way an operator would: a venv, a systemd service, a local Redis.

The integration tests of the provisioner run ``ozwald serve`` INSIDE a booted test host
(:class:`~tests.testhost.harness.TestHost`), as ``ozwald.service`` from ``units/``, and call its API
from this machine over the guest's IP. This module does the deployment:

- :func:`build_wheelhouse` runs ``tools/build-wheelhouse.sh`` on this machine: cp313 wheels of the
  runtime dependencies (cached per machine) plus the ozwald wheel built from the source tree.
- :class:`VenvInstaller` installs that wheelhouse into ``/opt/ozwald/venv`` with the GUEST's
  ``python3 -m venv`` and ``pip install --no-index`` (the guest has no network). The first install
  of a session (about 6 s) is kept on this machine as a tarball; later guests unpack it (about 0.2 s).
  The path is the same in every guest and so is the interpreter, so the unpacked venv is valid.
- :class:`ProvisionerDeployment` does the rest on one host: the ``/usr/bin/ozwald`` link, the settings
  and environment files, Redis locked down (loopback, password), the unit, and then start / stop /
  ``kill -9`` / journal / health checks.

Only the standard library is used (plus the harness), like the harness itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.testhost.harness import TestHost, recipe_key

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-wheelhouse.sh"
UNITS_DIR = REPO_ROOT / "units"

# Paths inside the guest.
GUEST_WHEELHOUSE = "/var/tmp/ozwald-wheelhouse"
INSTALL_ROOT = "/opt/ozwald"
VENV = f"{INSTALL_ROOT}/venv"
BIN_LINK = "/usr/bin/ozwald"
CONFIG_DIR = "/etc/ozwald"
CONFIG_PATH = f"{CONFIG_DIR}/ozwald.yml"
ENV_PATH = f"{CONFIG_DIR}/ozwald.env"
UNIT = "ozwald.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
UNIT_DROP_IN = f"/etc/systemd/system/{UNIT}.d/50-test.conf"
REDIS_UNIT = "redis-server.service"
REDIS_CONFIG = "/etc/redis/ozwald.conf"
REDIS_DROP_IN = f"/etc/systemd/system/{REDIS_UNIT}.d/ozwald.conf"
REDIS_PORT = 6379

API_PORT = 8000
# Ozwald's default bind address is 127.0.0.1; the tests reach the API from this machine.
API_HOST = "0.0.0.0"  # the guest network is a private veth pair


class DeployError(RuntimeError):
    """Building, installing or running Ozwald in a test host failed."""


def _now() -> float:
    return time.monotonic()


# --------------------------------------------------------------------------------------------
# Wheelhouse (this machine)
# --------------------------------------------------------------------------------------------


def build_wheelhouse(out_dir: Path, *, timeout: float = 600.0) -> Path:
    """Run tools/build-wheelhouse.sh into ``out_dir`` and return the wheelhouse it prints.

    The first run on a machine downloads the dependency wheels from PyPI (a few seconds); later runs
    are offline and take about a second (the ozwald wheel is rebuilt every time).
    """
    try:
        result = subprocess.run(
            [str(BUILD_SCRIPT), str(out_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as err:
        raise DeployError(f"{BUILD_SCRIPT.name} did not finish within {timeout} s") from err
    if result.returncode != 0:
        raise DeployError(
            f"{BUILD_SCRIPT.name} failed with status {result.returncode}:\n{result.stderr.strip()}"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise DeployError(f"{BUILD_SCRIPT.name} printed no wheelhouse path:\n{result.stderr.strip()}")
    wheelhouse = Path(lines[-1])
    if not any(wheelhouse.glob("ozwald-*.whl")):
        raise DeployError(f"no ozwald wheel in {wheelhouse}")
    return wheelhouse


def ozwald_wheel(wheelhouse: Path) -> Path:
    """The one ozwald wheel of a wheelhouse."""
    wheels = sorted(wheelhouse.glob("ozwald-*.whl"))
    if len(wheels) != 1:
        raise DeployError(f"expected one ozwald wheel in {wheelhouse}, found {[w.name for w in wheels]}")
    return wheels[0]


def wheelhouse_digest(wheelhouse: Path) -> str:
    """A hash of every wheel's name and content: what a cached venv was built from."""
    digest = hashlib.sha256()
    for wheel in sorted(wheelhouse.glob("*.whl")):
        digest.update(wheel.name.encode() + b"\0")
        digest.update(hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The venv (guest)
# --------------------------------------------------------------------------------------------


def dev_cache_root() -> Path:
    """Per-machine cache of development artefacts, shared with tools/build-wheelhouse.sh."""
    root = Path(os.environ.get("OZWALD_DEV_CACHE", "/var/cache/ozwald-dev"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ozwald-dev"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


class VenvInstaller:
    """Installs Ozwald into ``/opt/ozwald/venv`` of test hosts, building it only when needed.

    A build happens inside a guest (``python3 -m venv`` and an offline ``pip install`` of the ozwald
    wheel, about 5 s); with a ``cache_dir`` the result is kept there as a tarball named after the
    wheelhouse digest and the guest recipe (:func:`~tests.testhost.harness.recipe_key`: the guest's
    Python), and every later install, in any guest, unpacks it (about 0.1 s). The ozwald wheel is
    reproducible, so the cache also survives test sessions as long as the sources do not change;
    the ``keep`` most recently used tarballs are kept (about 35 MB each).

    ``timings`` records the last install: ``copy_s``/``venv_s``/``pip_s``/``save_s`` when built,
    ``unpack_s`` when unpacked, ``install_s`` in both cases; ``builds`` and ``unpacks`` count them.
    """

    def __init__(self, wheelhouse: Path, cache_dir: Path | None = None, *, keep: int = 3) -> None:
        self.wheelhouse = wheelhouse
        self.wheel = ozwald_wheel(wheelhouse)
        self.digest = wheelhouse_digest(wheelhouse)
        self.cache_dir = cache_dir
        self.keep = keep
        self.timings: dict[str, float] = {}
        self.builds = 0
        self.unpacks = 0

    @property
    def tarball(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"venv-{self.digest}-{recipe_key()}.tar"

    def install(self, host: TestHost) -> dict[str, float]:
        """Put the venv into ``host`` (replacing any there) and return the timings of this install."""
        self.timings = {}
        started = _now()
        if host.guest_path(VENV).exists() or host.guest_path(VENV).is_symlink():
            host.exec(["rm", "-rf", VENV], check=True)
        tarball = self.tarball
        if tarball is not None and self._unpack(host, tarball):
            self.unpacks += 1
        else:
            self._build(host)
            self.builds += 1
            if tarball is not None:
                self._save(host, tarball)
        self.timings["install_s"] = _now() - started
        return dict(self.timings)

    def _build(self, host: TestHost) -> None:
        t0 = _now()
        staged = host.guest_path(GUEST_WHEELHOUSE)
        if staged.exists():
            shutil.rmtree(staged)
        shutil.copytree(self.wheelhouse, staged)
        t1 = _now()
        host.guest_path(INSTALL_ROOT).mkdir(parents=True, exist_ok=True)
        result = host.exec(["python3", "-m", "venv", VENV], timeout=180)
        if result.returncode != 0:
            raise DeployError(f"python3 -m venv failed in {host.name}:\n{result.stdout}{result.stderr}")
        t2 = _now()
        result = host.exec(
            [
                f"{VENV}/bin/pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--find-links",
                GUEST_WHEELHOUSE,
                f"{GUEST_WHEELHOUSE}/{self.wheel.name}",
            ],
            timeout=300,
        )
        if result.returncode != 0:
            raise DeployError(f"pip install in {host.name} failed:\n{result.stdout}{result.stderr}")
        t3 = _now()
        shutil.rmtree(staged)
        self.timings.update(copy_s=t1 - t0, venv_s=t2 - t1, pip_s=t3 - t2)

    def _save(self, host: TestHost, tarball: Path) -> None:
        """Tar the guest's venv onto this machine (about 40 MB; written atomically)."""
        t0 = _now()
        tarball.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".venv-", suffix=".tar", dir=tarball.parent)
        os.close(fd)
        try:
            # tar from this machine, reading the guest's tree through /proc/<pid1>/root: symlinks
            # (bin/python3 -> /usr/bin/python3) are stored as links and never followed.
            subprocess.run(
                ["tar", "-C", str(host.guest_path(INSTALL_ROOT)), "-cf", tmp, "venv"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            Path(tmp).rename(tarball)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.timings["save_s"] = _now() - t0
        self._prune(tarball.parent)

    def _prune(self, directory: Path) -> None:
        """Delete all but the ``keep`` most recently used tarballs (another session may still want one:
        it then builds its venv again, see :meth:`_unpack`)."""
        tarballs = sorted(directory.glob("venv-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in tarballs[self.keep :]:
            old.unlink(missing_ok=True)

    def _unpack(self, host: TestHost, tarball: Path) -> bool:
        """Unpack a cached venv into the guest; False when there is none (or it just vanished)."""
        t0 = _now()
        try:
            source = tarball.open("rb")
        except FileNotFoundError:
            return False
        root = host.guest_path(INSTALL_ROOT)
        root.mkdir(parents=True, exist_ok=True)
        with source:
            os.utime(tarball)  # most recently used: kept by _prune
            result = subprocess.run(
                ["tar", "-C", str(root), "--same-owner", "--same-permissions", "-xf", "-"],
                stdin=source,
                capture_output=True,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise DeployError(f"unpacking {tarball} into {host.name} failed: {result.stderr.decode().strip()}")
        self.timings["unpack_s"] = _now() - t0
        return True


# --------------------------------------------------------------------------------------------
# The deployment (guest)
# --------------------------------------------------------------------------------------------


def default_config(host: TestHost, *, provisioner: str, redis_password: str, services: str = "") -> str:
    """A settings file for one provisioner on ``host``, with the local Redis as its cache.

    ``services`` is YAML for the ``services:`` list (its items, indented by two spaces), or empty.
    """
    body = "\n" + services.strip("\n") + "\n" if services.strip() else " []\n"
    return (
        "hosts:\n"
        f"  - name: {host.name}\n"
        f"    ip: {host.ip}\n"
        "provisioners:\n"
        f"  - name: {provisioner}\n"
        f"    host: {host.name}\n"
        "    cache:\n"
        "      type: redis\n"
        "      parameters:\n"
        "        host: 127.0.0.1\n"
        f"        port: {REDIS_PORT}\n"
        f"        password: {json.dumps(redis_password)}\n"
        "services:" + body
    )


class ProvisionerDeployment:
    """Ozwald installed in one test host as ``ozwald.service``; see the module docstring.

    Secrets are made up per deployment: ``system_key`` (the API token, in ``/etc/ozwald/ozwald.env``)
    and ``redis_password`` (in ``/etc/redis/ozwald.conf`` and in the settings file). ``api_host`` and
    ``api_port`` go into the environment file as ``OZWALD_API_HOST``/``OZWALD_API_PORT``; ``serve_args``,
    when given, replace the unit's ``ExecStart=`` through a drop-in (``ozwald serve ARGS``).
    """

    def __init__(
        self,
        host: TestHost,
        installer: VenvInstaller,
        *,
        provisioner: str | None = None,
        system_key: str | None = None,
        redis_password: str | None = None,
        api_host: str = API_HOST,
        api_port: int = API_PORT,
    ) -> None:
        self.host = host
        self.installer = installer
        self.provisioner = provisioner or host.name
        self.system_key = system_key or secrets.token_urlsafe(32)
        self.redis_password = redis_password or secrets.token_hex(24)
        self.api_host = api_host
        self.api_port = api_port
        self.timings: dict[str, float] = {}

    # -- installing ---------------------------------------------------------------------------

    def install(
        self,
        config: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        serve_args: Sequence[str] | None = None,
        enable: bool = False,
    ) -> ProvisionerDeployment:
        """Install everything (not started): venv, link, settings, environment, Redis, the unit."""
        t0 = _now()
        self.install_venv()
        t1 = _now()
        self.write_config(config if config is not None else self.default_config())
        self.write_env(env)
        self.configure_redis()
        t2 = _now()
        self.install_unit(serve_args=serve_args)
        if enable:
            self.host.systemctl("enable", UNIT)
        self.timings.update(venv_s=t1 - t0, redis_s=t2 - t1, unit_s=_now() - t2, install_s=_now() - t0)
        return self

    def install_venv(self) -> None:
        """The venv (built or unpacked, see VenvInstaller) and ``/usr/bin/ozwald`` pointing into it."""
        self.installer.install(self.host)
        link = self.host.guest_path(BIN_LINK)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"{VENV}/bin/ozwald")  # a guest path: resolved by the guest, not by us

    def default_config(self, services: str = "") -> str:
        """:func:`default_config` for this deployment's host, provisioner and Redis password."""
        return default_config(
            self.host, provisioner=self.provisioner, redis_password=self.redis_password, services=services
        )

    def write_config(self, text: str) -> None:
        """Write the settings file (mode 0600: it holds the Redis password)."""
        self.host.write_file(CONFIG_PATH, text, mode=0o600)
        self.host.guest_path(CONFIG_DIR).chmod(0o755)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """What ``/etc/ozwald/ozwald.env`` holds: the key, the provisioner, the bind address, extras."""
        values = {
            "OZWALD_SYSTEM_KEY": self.system_key,
            "OZWALD_PROVISIONER": self.provisioner,
            "OZWALD_API_HOST": self.api_host,
            "OZWALD_API_PORT": str(self.api_port),
        }
        values.update(extra or {})
        return values

    def write_env(self, extra: Mapping[str, str] | None = None) -> None:
        """Write ``/etc/ozwald/ozwald.env`` (mode 0600), in systemd's EnvironmentFile= syntax."""
        lines = []
        for key, value in self.env(extra).items():
            if "\n" in value or "'" in value:
                raise DeployError(f"{key}: newlines and single quotes are not supported in ozwald.env")
            lines.append(f"{key}='{value}'")
        self.host.write_file(ENV_PATH, "\n".join(lines) + "\n", mode=0o600)

    def configure_redis(self) -> None:
        """Redis on 127.0.0.1 with a password (units/redis-ozwald.conf + drop-in), restarted."""
        template = (UNITS_DIR / "redis-ozwald.conf").read_text()
        if "@REDIS_PASSWORD@" not in template:
            raise DeployError("units/redis-ozwald.conf has no @REDIS_PASSWORD@ placeholder")
        self.host.write_file(REDIS_CONFIG, template.replace("@REDIS_PASSWORD@", self.redis_password), mode=0o640)
        self.host.exec(["chown", "root:redis", REDIS_CONFIG], check=True)
        drop_in = (UNITS_DIR / "redis-server.service.d" / "ozwald.conf").read_text()
        self.host.write_file(REDIS_DROP_IN, drop_in)
        self.host.systemctl("daemon-reload")
        result = self.host.systemctl("restart", REDIS_UNIT, check=False)
        if result.returncode != 0:
            raise DeployError(f"{REDIS_UNIT} did not restart:\n{self.host.journal(REDIS_UNIT, lines=40)}")
        pong = self.redis_cli("PING")
        if pong.stdout.strip() != "PONG":
            raise DeployError(f"Redis does not answer PING with the password: {pong.stdout}{pong.stderr}")

    def install_unit(self, *, serve_args: Sequence[str] | None = None) -> None:
        """``units/ozwald.service`` into /etc/systemd/system, then daemon-reload.

        ``serve_args`` replace the ``ExecStart=`` through the test drop-in (``ozwald serve ARGS``);
        without them any earlier test drop-in is removed.
        """
        self.host.write_file(UNIT_PATH, (UNITS_DIR / UNIT).read_text())
        # ozwald.service requires Ozwald's own Redis unit; these deployments use the guest's redis-server
        # instead, so the unit is installed but skipped (no /etc/ozwald/redis-auth.conf: its condition fails,
        # which satisfies Requires=). The packaged install (tests/deploy/test_package.py) runs it for real.
        for companion in ("ozwald-redis.service", "ozwald.target"):
            self.host.write_file(f"/etc/systemd/system/{companion}", (UNITS_DIR / companion).read_text())
        if serve_args is not None:
            command = shlex.join([BIN_LINK, "serve", *serve_args])
            self.write_drop_in(f"[Service]\nExecStart=\nExecStart={command}\n")
        else:
            self.remove_drop_in()

    def write_drop_in(self, text: str) -> None:
        """Write the unit's test drop-in (``ozwald.service.d/50-test.conf``) and daemon-reload."""
        self.host.write_file(UNIT_DROP_IN, text)
        self.host.systemctl("daemon-reload")

    def remove_drop_in(self) -> None:
        """Remove the test drop-in (if any), reset a failed state, and daemon-reload."""
        self.host.guest_path(UNIT_DROP_IN).unlink(missing_ok=True)
        self.host.systemctl("daemon-reload")
        self.host.systemctl("reset-failed", UNIT, check=False)

    # -- running ------------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """``systemctl start``; with ``wait``, return once GET /health answers (see :meth:`wait_healthy`)."""
        result = self.host.systemctl("start", UNIT, check=False, timeout=timeout)
        if result.returncode != 0:
            raise DeployError(f"systemctl start {UNIT} failed: {result.stderr.strip()}\n{self.journal(lines=60)}")
        if wait:
            self.wait_healthy(timeout=timeout)

    def stop(self, *, timeout: float = 60.0) -> None:
        self.host.systemctl("stop", UNIT, timeout=timeout)

    def restart(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        self.host.systemctl("restart", UNIT, timeout=timeout)
        if wait:
            self.wait_healthy(timeout=timeout)

    def kill(self, signal: str = "KILL") -> int:
        """``systemctl kill -s SIGNAL`` the service (every process of it); returns the pid that was main."""
        pid = self.main_pid()
        self.host.systemctl("kill", "-s", signal, UNIT)
        return pid

    def show(self, *properties: str) -> dict[str, str]:
        """Unit properties from ``systemctl show``."""
        names = properties or ("ActiveState", "SubState", "MainPID", "NRestarts", "Result", "ExecMainStatus")
        out = self.host.systemctl("show", UNIT, "-p", ",".join(names)).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return values

    def main_pid(self) -> int:
        """The service's main pid as the guest sees it (0 when not running)."""
        return int(self.show("MainPID")["MainPID"])

    def n_restarts(self) -> int:
        """How many times systemd restarted the service automatically (Restart=) since it was loaded."""
        return int(self.show("NRestarts")["NRestarts"])

    def wait_restarted(self, old_pid: int, *, timeout: float = 30.0) -> int:
        """After a kill: wait until a new main process runs and /health answers; returns its pid."""
        deadline = _now() + timeout
        while _now() < deadline:
            pid = self.main_pid()
            if pid not in (0, old_pid):
                self.wait_healthy(timeout=max(1.0, deadline - _now()))
                return pid
            time.sleep(0.05)
        raise DeployError(f"{UNIT} was not restarted within {timeout} s: {self.show()}\n{self.journal(lines=60)}")

    def journal(self, *, lines: int = 200) -> str:
        """The service's journal since the guest booted."""
        return self.host.journal(UNIT, lines=lines)

    # -- the API ------------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        """``http://<guest ip>:<api port><path>``, reachable from this machine."""
        return self.host.url(self.api_port, path)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.system_key}"}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """One API call from this machine: (status, decoded JSON or raw text). HTTP errors are returned."""
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.auth_headers) if auth else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url(path), data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def health(self, *, timeout: float = 2.0) -> Any:
        """GET /health (no key); raises OSError/URLError when nothing answers."""
        with urllib.request.urlopen(self.url("/health"), timeout=timeout) as resp:
            return json.loads(resp.read())

    def wait_healthy(self, *, timeout: float = 30.0) -> Any:
        """Poll GET /health until it answers 200 (every 50 ms, bounded by ``timeout``).

        Fails early, with the journal, when the unit fails or stops instead of coming up.
        """
        deadline = _now() + timeout
        last: BaseException | None = None
        while _now() < deadline:
            try:
                return self.health(timeout=min(2.0, max(0.1, deadline - _now())))
            except (OSError, ValueError, http.client.HTTPException) as err:  # refused, reset, 503, not JSON
                last = err
            state = self.show("ActiveState", "SubState", "Result")
            if state["ActiveState"] in ("failed", "inactive"):
                raise DeployError(f"{UNIT} is {state} instead of serving:\n{self.journal(lines=60)}")
            time.sleep(0.05)
        raise DeployError(
            f"GET {self.url('/health')} did not answer within {timeout} s (last error: {last!r}); "
            f"{UNIT}: {self.show()}\n{self.journal(lines=60)}"
        )

    # -- commands in the guest ----------------------------------------------------------------

    def ozwald(
        self, *args: str, timeout: float = 60.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``/usr/bin/ozwald ARGS`` in the guest, as a transient service with the unit's environment."""
        environment = {"OZWALD_CONFIG": CONFIG_PATH, **(env or {})}
        return self.host.run(
            [BIN_LINK, *args],
            timeout=timeout,
            env=environment,
            properties=[f"EnvironmentFile=-{ENV_PATH}"],
        )

    def redis_cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """``redis-cli ARGS`` in the guest against the local Redis, authenticated unless password=''."""
        secret = self.redis_password if password is None else password
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), *args]
        if secret:
            argv = ["env", f"REDISCLI_AUTH={secret}", *argv]
        return self.host.exec(argv, timeout=30)

    @contextlib.contextmanager
    def running(self, *, timeout: float = 30.0) -> Iterator[ProvisionerDeployment]:
        """Start the service (waiting for /health) and stop it again on the way out."""
        self.start(timeout=timeout)
        try:
            yield self
        finally:
            self.stop()


__all__ = [
    "API_PORT",
    "BIN_LINK",
    "CONFIG_PATH",
    "ENV_PATH",
    "UNIT",
    "VENV",
    "DeployError",
    "ProvisionerDeployment",
    "VenvInstaller",
    "build_wheelhouse",
    "default_config",
    "ozwald_wheel",
]
