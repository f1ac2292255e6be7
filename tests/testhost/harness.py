# SPDX-License-Identifier: AGPL-3.0-or-later
"""Boot throwaway systemd + Podman + Quadlet hosts with systemd-nspawn, for Ozwald's tests.

Ozwald drives systemd over D-Bus and Podman through Quadlet units. Mocking either would test our
idea of how they behave, not how they behave, so the integration tests run against a real
Debian 13 (trixie) system: systemd 257, Podman 5 with Quadlet, crun, netavark. It boots in about
half a second inside a systemd-nspawn container on the test machine, which does not itself need
systemd as PID 1.

The pieces:

- :func:`build_rootfs` debootstraps the guest once and caches it on the machine, keyed by a hash
  of the recipe (:func:`recipe`). Test images are baked into the cached tree at build time, by
  booting it once, because no container registry is reachable and building images per test
  would cost seconds each time.
- :class:`TestHost` boots the cached tree with a private writable layer (nspawn's
  ``--volatile=overlay``, plus a private copy of the container storage), gives it its own /30 on
  a veth pair, and tears everything down again, even when the test fails. A full ``cp -a`` copy
  per host is available too (``mode="copy"``), but on this kind of machine it costs 1.5 to 9 s
  per host (ext4 mounted with ``discard``, two cores), against about 0.1 s for the overlay.

The flags and workarounds come from experiments recorded in ``/work/shared/testhost-notes.md``;
the comments below say why each one is there. Everything here needs root.

Only the standard library is used, so the harness works from any Python 3.11+ with no install.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

logger = logging.getLogger("tests.testhost")

# Bump when the build changes in a way the recipe below does not capture (e.g. a new step in
# build_rootfs), so that machines with an old cached tree rebuild it.
HARNESS_VERSION = 2

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SOURCE = REPO_ROOT / "contrib" / "images" / "testserver" / "server.py"

SUITE = "trixie"
FALLBACK_MIRROR = "http://deb.debian.org/debian"

# What the guest needs: systemd and D-Bus to be a host at all; Podman and its runtime pieces for
# Quadlet containers with bridge networking and published ports; busybox-static and python3 as
# raw material for the test images; redis-server because Ozwald keeps its state in Redis; the python3-*
# packages Ozwald's .deb depends on.
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "podman",
    "crun",
    "conmon",
    "netavark",
    "aardvark-dns",
    "passt",
    "slirp4netns",
    "fuse-overlayfs",
    "catatonit",
    "uidmap",
    "containers-storage",
    "golang-github-containers-common",
    "nftables",
    "iptables",
    "iproute2",
    "procps",
    "busybox-static",
    "redis-server",
    "python3",
    "python3-venv",
    # The runtime dependencies of Ozwald's Debian package (packaging/debian/control), pre-seeded so that
    # `apt-get install ./ozwald_*.deb` in a guest runs offline (tests/deploy/test_package.py).
    "python3-yaml",
    "python3-pydantic",
    "python3-bottle",
    "python3-waitress",
    "python3-hiredis",
    "python3-psutil",
    "python3-jeepney",
    "python3-prometheus-client",
    "python3-podman",
)

# dpkg configuration seeded into the target before debootstrap and removed afterwards. Skipping
# fsync and the documentation cuts the build by about a quarter on a two-core machine.
DPKG_CONFIG_PATH = "etc/dpkg/dpkg.cfg.d/50-ozwald-testhost-build"
DPKG_CONFIG = """\
force-unsafe-io
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
"""

# Files written into the guest tree after debootstrap.
ROOTFS_FILES: Mapping[str, str] = {
    "etc/hostname": "ozwald-testhost\n",
    # The guest's cgroup2 tree has no controllers delegated (pids, memory and cpu are missing),
    # and Podman's default pids limit makes every container fail to start. Test units must not
    # set Memory=, PidsLimit= or CPU limits for the same reason.
    "etc/containers/containers.conf.d/50-test.conf": "[containers]\npids_limit = 0\n",
    # Keep the journal in memory: nothing needs it after the host is gone, and the test machine
    # has two cores and a shared disk. No rate limit, so tests never miss a log line.
    "etc/systemd/journald.conf.d/50-test.conf": (
        "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n"
    ),
}

# Timers that would wake up during a test and compete for two CPU cores.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
)

# Deleted from the tree after the build: about 220 MB that no test reads (.debs left by
# debootstrap, apt lists, documentation, translations). A smaller tree copies faster per host.
TRIMMED_PATHS: tuple[str, ...] = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*_*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
)

# unit -> target that wants it. podman.socket serves the Podman API at /run/podman/podman.sock.
ENABLED_UNITS: Mapping[str, str] = {"podman.socket": "sockets.target"}

BUSYBOX_IMAGE = "localhost/ozwald-busybox:latest"
TESTSERVER_IMAGE = "localhost/ozwald-testserver:latest"
IMAGES: tuple[str, ...] = (BUSYBOX_IMAGE, TESTSERVER_IMAGE)

# Where the image build script and its inputs are staged inside the guest during the build.
IMAGE_STAGE = "var/tmp/ozwald-images"

# Runs inside the freshly built guest, with the guest's own python3, to build the test images:
# the guest has the right binaries, ldd and podman; the build machine may have none of them.
IMAGE_SCRIPT = r'''
import os, re, shutil, subprocess, sys

STAGE = "/var/tmp/ozwald-images"
PY_VERSION = "%d.%d" % sys.version_info[:2]
STDLIB = "/usr/lib/python" + PY_VERSION
# Parts of the standard library a headless HTTP server never imports.
STDLIB_SKIP = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3",
    "pydoc_data", "_pyrepl", "unittest", "venv", "sqlite3", "dbm", "curses", "site-packages",
    "dist-packages", "sitecustomize.py",
}
# Extension modules that are tests, need a terminal, or pull in large libraries (OpenSSL).
DYNLOAD_SKIP = re.compile(
    r"^(_test|_xxtestfuzz|xx|_ctypes_test|_tkinter|_curses|readline|_dbm|_gdbm|_sqlite3"
    r"|_ssl|_hashlib|_interp)"
)
USRMERGE = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def replicate(tree, path):
    """Copy path into tree, recreating every symlink met on the way (usrmerge, .so links)."""
    parts = path.strip("/").split("/")
    current = "/"
    for i, part in enumerate(parts):
        source = os.path.join(current, part)
        target = tree + source
        if os.path.islink(source):
            link = os.readlink(source)
            if not os.path.lexists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(link, target)
            resolved = os.path.normpath(os.path.join(current, link))
            rest = "/".join(parts[i + 1:])
            return replicate(tree, resolved + ("/" + rest if rest else ""))
        current = source
    if os.path.isdir(path):
        os.makedirs(tree + path, exist_ok=True)
    elif not os.path.exists(tree + path):
        os.makedirs(os.path.dirname(tree + path), exist_ok=True)
        shutil.copy2(path, tree + path)


def shared_libraries(path):
    """The shared libraries (and loader) that path needs, as ldd reports them."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"(/\S+) \(0x", out)


def skeleton(tree):
    for name, target in USRMERGE.items():
        os.makedirs(os.path.join(tree, target), exist_ok=True)
        os.symlink(target, os.path.join(tree, name))
    for name, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700), ("etc", 0o755)):
        os.makedirs(os.path.join(tree, name), exist_ok=True)
        os.chmod(os.path.join(tree, name), mode)


def add_busybox(tree):
    """The static busybox and a link for each applet it has, where the name is still free."""
    replicate(tree, "/usr/bin/busybox")
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        link = os.path.join(tree, "usr/bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)


def stdlib_ignore(directory, names):
    if directory == STDLIB:
        return [n for n in names if n in STDLIB_SKIP or n.startswith("config-")]
    if directory == STDLIB + "/lib-dynload":
        return [n for n in names if DYNLOAD_SKIP.match(n)]
    return [n for n in names if n.endswith((".opt-1.pyc", ".opt-2.pyc"))]


def add_python(tree):
    """The interpreter, its libraries and a trimmed standard library (with compiled .pyc)."""
    exe = os.path.realpath(sys.executable)
    replicate(tree, exe)
    os.symlink(os.path.basename(exe), os.path.join(tree, "usr/bin/python3"))
    shutil.copytree(STDLIB, tree + STDLIB, symlinks=True, ignore=stdlib_ignore)
    binaries = [exe]
    for root, _dirs, files in os.walk(tree + STDLIB + "/lib-dynload"):
        binaries += [os.path.join(root, f)[len(tree):] for f in files if f.endswith(".so")]
    for binary in binaries:
        for library in shared_libraries(binary):
            replicate(tree, library)


def size_mib(tree):
    total = 0
    for root, _dirs, files in os.walk(tree):
        for f in files:
            path = os.path.join(root, f)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total / 2**20


def podman_import(tree, image, changes):
    tarball = tree + ".tar"
    subprocess.run(["tar", "-C", tree, "-cf", tarball, "."], check=True)
    args = ["podman", "import", "--quiet"]
    for change in changes:
        args += ["--change", change]
    subprocess.run(args + [tarball, image], check=True, stdout=subprocess.DEVNULL)
    print(f"{image}: {size_mib(tree):.1f} MiB", flush=True)


def main():
    busybox = STAGE + "/busybox"
    skeleton(busybox)
    add_busybox(busybox)
    podman_import(busybox, sys.argv[1], ['CMD ["/bin/sh"]'])

    server = STAGE + "/testserver"
    skeleton(server)
    add_python(server)
    add_busybox(server)  # sh and wget, for HealthCmd= and debugging
    os.makedirs(server + "/app")
    shutil.copy2(STAGE + "/server.py", server + "/app/server.py")
    podman_import(server, sys.argv[2], [
        'CMD ["/usr/bin/python3", "-u", "-S", "/app/server.py"]',
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        "WORKDIR /app",
        "EXPOSE 8000/tcp",
    ])


main()
'''

# Paths on the machine running the tests. The cache outlives test runs; the work directory holds
# the per-host copies, which are deleted at teardown.
CACHE_ROOT = Path(os.environ.get("OZWALD_TESTHOST_CACHE", "/var/cache/ozwald-testhost"))
LOCK_DIR = Path(os.environ.get("OZWALD_TESTHOST_LOCKS", "/run/ozwald-testhost"))


def _default_work_root() -> Path:
    """Memory (/dev/shm) when it is a tmpfs, else /var/tmp.

    A host writes its container storage copy (about 40 MB) and, in copy mode, the whole tree
    there. On this kind of machine the disk is ext4 mounted with ``discard``, and writing and
    deleting a few hundred MB per host stalls later I/O for seconds; tmpfs does not.
    """
    override = os.environ.get("OZWALD_TESTHOST_WORKDIR")
    if override:
        return Path(override)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        if fields.split()[4] == "/dev/shm" and rest.split()[:1] == ["tmpfs"]:
            return Path("/dev/shm/ozwald-testhost")
    return Path("/var/tmp/ozwald-testhost")


WORK_ROOT = _default_work_root()
KEEP_ENV = "OZWALD_TESTHOST_KEEP"
MODE_ENV = "OZWALD_TESTHOST_MODE"

# Each host gets slot N and with it machine name ozthN (short enough for nspawn's "ve-<name>"
# interface name to fit in 15 characters) and the network 10.213.N.0/30.
NET_PREFIX = "10.213"
MAX_SLOTS = 256
NAME_PREFIX = "ozth"

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_ENV: Mapping[str, str] = {
    "PATH": SAFE_PATH,
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

# nsenter into every namespace of the guest's PID 1; -C (cgroup) so that systemctl and
# systemd-run see the guest's own cgroup tree.
NSENTER_FLAGS = ("-m", "-u", "-i", "-n", "-p", "-C")

PR_SET_PDEATHSIG = 1

# How a host gets a writable root; see TestHost.__init__.
Mode = Literal["overlay", "copy", "inplace"]
CONTAINER_STORAGE = "var/lib/containers"


class TestHostError(RuntimeError):
    """Building, booting or talking to a test host failed."""

    __test__ = False  # not a pytest test class, despite the name


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 120.0,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a host command with captured text output; a failure names the command and its output."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=dict(env) if env is not None else None,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise TestHostError(
            f"command failed with status {result.returncode}: {' '.join(argv)}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )
    return result


def _tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for error messages; empty if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on path, so concurrent builds of the same tree wait for each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_flock(path: Path, operation: int) -> int | None:
    """Open path and flock it without waiting; the descriptor is the lock (None if busy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _in_use_lock(key: str) -> Path:
    """Running hosts hold this shared; deleting or replacing cache entry ``key`` needs it exclusive.

    In overlay mode the cached tree is every running host's lower layer, so it must not vanish
    under them.
    """
    return CACHE_ROOT / f".inuse-{key}"


def _rmtree(path: Path) -> None:
    """Remove a directory tree that may hold a whole root file system (root-owned, device nodes)."""
    if path.exists() or path.is_symlink():
        _run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=300)


def debian_mirror() -> str:
    """The Debian mirror this machine already uses, so the build goes where apt is allowed to go.

    OZWALD_TESTHOST_MIRROR overrides it. Both the deb822 format (``*.sources``, default since
    Debian 12) and one-line ``sources.list`` entries are read; security mirrors are skipped
    because they carry only updates, not the suite itself.
    """
    override = os.environ.get("OZWALD_TESTHOST_MIRROR")
    if override:
        return override
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            suites = fields.get("suites", "").split()
            for uri in fields.get("uris", "").split():
                if "security" not in uri and not all(s.endswith("-security") for s in suites):
                    return uri.rstrip("/")
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and "security" not in match.group(1) and not match.group(2).endswith("-security"):
                return match.group(1).rstrip("/")
    return FALLBACK_MIRROR


# --------------------------------------------------------------------------------------------
# Building and caching the root file system
# --------------------------------------------------------------------------------------------


def recipe() -> dict[str, object]:
    """Everything that determines the built tree; its hash is the cache key.

    The mirror is left out on purpose: any mirror serves the same suite.
    """
    return {
        "harness_version": HARNESS_VERSION,
        "suite": SUITE,
        "arch": platform.machine(),
        "packages": list(PACKAGES),
        "dpkg_config": DPKG_CONFIG,
        "files": dict(ROOTFS_FILES),
        "masked": list(MASKED_UNITS),
        "enabled": dict(ENABLED_UNITS),
        "trimmed": list(TRIMMED_PATHS),
        "images": list(IMAGES),
        "image_script": IMAGE_SCRIPT,
        "server_sha256": hashlib.sha256(SERVER_SOURCE.read_bytes()).hexdigest(),
    }


def recipe_key() -> str:
    """A short hash of :func:`recipe`: the name of the cache directory."""
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_rootfs() -> Path | None:
    """The cached tree for the current recipe, or None if it has not been built on this machine."""
    rootfs = CACHE_ROOT / recipe_key() / "rootfs"
    return rootfs if rootfs.is_dir() else None


def _debootstrap(target: Path, log_path: Path) -> None:
    """debootstrap the minbase variant with our packages; .debs are cached across builds."""
    debs = CACHE_ROOT / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={debs}",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
        mirror,
    ]
    seed = target / DPKG_CONFIG_PATH
    seed.parent.mkdir(parents=True, exist_ok=True)
    seed.write_text(DPKG_CONFIG)
    logger.info("debootstrap %s from %s into %s", SUITE, mirror, target)
    with log_path.open("w") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise TestHostError(f"debootstrap failed with status {result.returncode} (log {log_path}):\n{_tail(log_path)}")
    seed.unlink()


def _configure(root: Path) -> None:
    """The configuration steps of the notes, applied to the tree before its first boot."""
    for relative, content in ROOTFS_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    units = root / "etc" / "systemd" / "system"
    for unit in MASKED_UNITS:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for unit, target in ENABLED_UNITS.items():
        wants = units / f"{target}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/lib/systemd/system/{unit}")
    _reset_machine_id(root)


def _reset_machine_id(root: Path) -> None:
    """Leave /etc/machine-id empty, so that each boot can be given its own id.

    Hosts that share an id would look like one machine to anything keyed on it. An empty file
    (unlike a missing one or "uninitialized") does not count as a first boot. TestHost passes
    ``systemd.machine_id=`` to the guest's systemd; without it the guest derives the same id in
    every boot (from the VM's DMI product uuid, it seems), and it ignores nspawn's ``--uuid``.
    """
    (root / "etc" / "machine-id").write_text("")


def _trim(root: Path) -> None:
    """Delete what no test needs (TRIMMED_PATHS), so that each per-host copy is cheaper."""
    for pattern in TRIMMED_PATHS:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _bake_images(root: Path) -> None:
    """Boot the new tree once and build the test images inside it with ``podman import``.

    Baking them into the cached tree means every test host has them at no cost. A quick run
    of each image (through systemd-run, so with the seccomp filter services get) proves they
    work before the tree is published.
    """
    stage = root / IMAGE_STAGE
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "build.py").write_text(IMAGE_SCRIPT)
    shutil.copy2(SERVER_SOURCE, stage / "server.py")
    with TestHost(root, mode="inplace") as host:
        result = host.exec(["python3", f"/{IMAGE_STAGE}/build.py", *IMAGES], timeout=300)
        if result.returncode != 0:
            raise TestHostError(f"building the test images failed:\n{result.stdout}\n{result.stderr}")
        for line in result.stdout.splitlines():
            logger.info("image %s", line)
        check = host.run(["podman", "run", "--rm", "--network=none", BUSYBOX_IMAGE, "true"], timeout=60)
        if check.returncode != 0:
            raise TestHostError(f"{BUSYBOX_IMAGE} does not run:\n{check.stdout}\n{check.stderr}")
        # EXIT_CODE makes the server exit after its imports, which proves the trimmed stdlib.
        check = host.run(["podman", "run", "--rm", "--network=none", "-e", "EXIT_CODE=7", TESTSERVER_IMAGE], timeout=60)
        if check.returncode != 7:
            raise TestHostError(
                f"{TESTSERVER_IMAGE} does not run (status {check.returncode}):\n{check.stdout}\n{check.stderr}"
            )
    _rmtree(stage)
    _reset_machine_id(root)  # the build boot committed the id it made up


def build_rootfs(*, force: bool = False) -> Path:
    """Return the cached guest tree for the current recipe, building it first if needed.

    The tree is built in a temporary directory next to the cache entry and renamed into place
    only when complete, so an interrupted build never leaves a half tree that later runs would
    trust. A lock file makes a second concurrent build wait for the first and then reuse it.
    """
    key = recipe_key()
    final = CACHE_ROOT / key
    if final.is_dir() and not force:
        return final / "rootfs"
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with _flock(CACHE_ROOT / f".lock-{key}"):
        if final.is_dir() and not force:
            return final / "rootfs"
        for stale in CACHE_ROOT.glob(f".build-{key}-*"):  # left by a killed build; we hold the lock
            _rmtree(stale)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=CACHE_ROOT))
        try:
            rootfs = work / "rootfs"
            _debootstrap(rootfs, work / "debootstrap.log")
            bootstrapped = time.monotonic()
            _configure(rootfs)
            _bake_images(rootfs)
            _trim(rootfs)
            described = recipe()
            described["image_script"] = hashlib.sha256(IMAGE_SCRIPT.encode()).hexdigest()
            meta = {
                "key": key,
                "recipe": described,
                "mirror": debian_mirror(),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "debootstrap_s": round(bootstrapped - started, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
            (work / "recipe.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            work.chmod(0o755)
            if final.exists():  # force: move the old tree away first, rename cannot replace a directory
                in_use = _try_flock(_in_use_lock(key), fcntl.LOCK_EX)
                if in_use is None:
                    raise TestHostError(f"{final} is in use by running test hosts; stop them first")
                try:
                    old = CACHE_ROOT / f".old-{key}-{os.getpid()}"
                    final.rename(old)
                    work.rename(final)
                finally:
                    os.close(in_use)
                _rmtree(old)
            else:
                work.rename(final)
        except BaseException:
            _rmtree(work)
            raise
        logger.info("built %s in %.1f s", final, time.monotonic() - started)
    return final / "rootfs"


def prune(*, keep_current: bool = True) -> list[Path]:
    """Delete cached trees of other recipes, leftovers of killed builds and kept host copies.

    Cached trees that running hosts boot from are skipped (see :func:`_in_use_lock`); work
    directories are only removed when their slot lock is free (their owner is gone).
    """
    removed: list[Path] = []
    current = recipe_key() if keep_current else None
    if CACHE_ROOT.is_dir():
        for entry in CACHE_ROOT.iterdir():
            if entry.name in ("debs", current) or not entry.is_dir():
                continue
            if entry.name.startswith(".build-"):
                with _flock(CACHE_ROOT / f".lock-{entry.name.split('-')[1]}"):
                    _rmtree(entry)
            elif entry.name.startswith("."):  # .old-*, left by an interrupted forced rebuild
                _rmtree(entry)
            else:
                in_use = _try_flock(_in_use_lock(entry.name), fcntl.LOCK_EX)
                if in_use is None:
                    logger.info("keeping %s: running test hosts boot from it", entry)
                    continue
                try:
                    _rmtree(entry)
                finally:
                    os.close(in_use)
            removed.append(entry)
    if WORK_ROOT.is_dir():
        for entry in WORK_ROOT.iterdir():
            if not entry.is_dir():
                continue
            match = re.match(rf"^{NAME_PREFIX}(\d+)-", entry.name)
            if match:
                slot = _try_lock_slot(int(match.group(1)))
                if slot is None:
                    continue  # a live host
                try:
                    _rmtree(entry)
                finally:
                    os.close(slot)
            else:  # kept-* directories
                _rmtree(entry)
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------------------------
# Slots, cgroups and processes
# --------------------------------------------------------------------------------------------


def _try_lock_slot(index: int) -> int | None:
    """Lock slot ``index`` for this process; the open descriptor is the lock (None if taken).

    flock locks belong to the open file description, so they also exclude other hosts of the
    same process, and the kernel drops them when the process dies, so slots never leak.
    """
    return _try_flock(LOCK_DIR / f"slot-{index}.lock", fcntl.LOCK_EX)


def cgroup_roots() -> list[Path]:
    """The cgroup hierarchies a machine needs its own group in.

    On this kind of machine (hybrid layout, no systemd as PID 1) those are the named v1
    ``name=systemd`` hierarchy and the v2 ``unified`` one; on a pure v2 machine it is just
    /sys/fs/cgroup. Two nspawn machines started from the same cgroup collide.
    """
    roots: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        mountpoint = Path(fields.split()[4])
        fstype, _source, options = ([*rest.split(), "", ""])[:3]
        wanted = fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(","))
        if wanted and mountpoint not in roots:
            roots.append(mountpoint)
    return roots


def _host_runs_systemd() -> bool:
    """True when the host's PID 1 is systemd; then nspawn is started in a transient scope."""
    return Path("/run/systemd/system").is_dir()


def _cgroup_pids(group: Path) -> list[int]:
    """Every process in a cgroup and its descendants."""
    pids: list[int] = []
    for procs in group.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _remove_cgroup(group: Path, timeout: float = 10.0) -> None:
    """Remove a cgroup tree bottom-up, killing stragglers (only ever processes we started)."""
    deadline = time.monotonic() + timeout
    while group.exists():
        pids = _cgroup_pids(group)
        if pids and time.monotonic() > deadline - timeout / 2:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        children = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*children, group]:
            with contextlib.suppress(FileNotFoundError, OSError):
                directory.rmdir()
        if not group.exists():
            return
        if time.monotonic() > deadline:
            raise TestHostError(f"cannot remove cgroup {group}; processes left: {_cgroup_pids(group)}")
        time.sleep(0.05)


def _proc_children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process on the machine."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _guest_init(root_pid: int) -> int | None:
    """The pid (in our namespace) of the guest's systemd, once it runs, among root_pid's descendants.

    It is the descendant that is pid 1 in its own pid namespace and has exec'd systemd; before
    the exec it is still nspawn setting up, and entering it would be premature.
    """
    tree = _proc_children()
    todo = list(tree.get(root_pid, []))
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        match = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
        if match and len(match.group(1).split()) >= 2 and match.group(1).split()[-1] == "1" and comm == "systemd":
            return pid
    return None


def _pdeathsig_and_cgroups(libc: ctypes.CDLL, cgroups: Sequence[Path]) -> None:
    """Run in the child between fork and exec of systemd-nspawn.

    Moves the child into the machine's own cgroups, and asks the kernel to SIGTERM it if the
    thread that started it dies, so a killed test run does not leave machines running (SIGTERM
    makes nspawn halt the guest cleanly).
    """
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    for group in cgroups:
        (group / "cgroup.procs").write_text(str(os.getpid()))


# --------------------------------------------------------------------------------------------
# The test host
# --------------------------------------------------------------------------------------------


class TestHost:
    """A booted Debian 13 guest with systemd, D-Bus, Podman/Quadlet, reachable from this machine.

    Use it as a context manager; teardown always runs, even if the boot or the test fails::

        with TestHost() as host:
            host.write_file("/etc/containers/systemd/x.container", "...")
            host.run(["systemctl", "daemon-reload"], check=True)
            requests.get(host.url(8000, "/health"))

    Attributes, valid once started:

    - ``name``: machine name (``ozthN``), also the guest's hostname;
    - ``machine_id``: the guest's /etc/machine-id, random per host;
    - ``ip`` / ``host_ip``: the guest's and this machine's ends of the veth pair (10.213.N.2/.1);
    - ``pid1``: pid of the guest's systemd in this machine's pid namespace;
    - ``rootfs``: the guest's root directory as this machine sees it (``/proc/<pid1>/root`` in
      the default overlay mode, the copy in copy mode);
    - ``bus_address``: D-Bus address of the guest's system bus, for jeepney/busctl from here;
    - ``podman_socket``: the guest's Podman API, ``unix://…/podman.sock``;
    - ``failed_units``: units that had failed when boot finished (the system is then "degraded").

    Several hosts may run at once, in one process or many: each takes a slot whose lock file
    decides its name, its /30 and its work directory.

    ``PR_SET_PDEATHSIG`` ties the guest's lifetime to the thread that called :meth:`start`:
    start hosts from a thread that outlives them (pytest fixtures do).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        template: Path | None = None,
        *,
        mode: Mode | None = None,
        boot_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        keep: bool | None = None,
    ) -> None:
        """Prepare (but do not boot) a host.

        template: the tree to boot; by default the cached tree, built if missing.
        mode: how the guest gets a writable root.
            ``"overlay"`` (default): the cached tree, read-only, under a tmpfs layer that nspawn
            makes (``--volatile=overlay``) and throws away at exit; /var/lib/containers is a
            private copy bind-mounted in, because Podman's overlay storage cannot sit on an
            overlayfs. Costs about 0.1-0.5 s and no teardown work; writes go to memory.
            ``"copy"``: a full ``cp -a`` of the tree, as in the notes; 1.5-9 s here.
            ``"inplace"``: boot the tree itself (only the build does this, to bake images).
            Defaults to the OZWALD_TESTHOST_MODE environment variable, else ``"overlay"``.
        keep: keep the work directory (renamed ``kept-…``) after teardown, for debugging;
            defaults to the OZWALD_TESTHOST_KEEP environment variable.
        """
        self.template = template
        if mode is None:
            mode = os.environ.get(MODE_ENV, "overlay")  # type: ignore[assignment]
        if mode not in ("overlay", "copy", "inplace"):
            raise TestHostError(f"unknown test host mode {mode!r}")
        self.mode: Mode = mode
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.keep = bool(os.environ.get(KEEP_ENV)) if keep is None else keep
        self.failed_units: list[str] = []
        self.machine_id = ""
        self.timings: dict[str, float] = {}
        self._slot: int | None = None
        self._slot_fd: int | None = None
        self._workdir: Path | None = None
        self._rootfs: Path | None = None
        self._template: Path | None = None
        self._in_use_fd: int | None = None
        self._cgroups: list[Path] = []
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None
        self._host_ifname: str | None = None

    # -- attributes -------------------------------------------------------------------------

    def _need_slot(self) -> int:
        if self._slot is None:
            raise TestHostError("test host is not started")
        return self._slot

    @property
    def name(self) -> str:
        """Machine name and hostname, ``ozthN``."""
        return f"{NAME_PREFIX}{self._need_slot()}"

    @property
    def ip(self) -> str:
        """The guest's address on the veth pair; services published by the guest answer here."""
        return f"{NET_PREFIX}.{self._need_slot()}.2"

    @property
    def host_ip(self) -> str:
        """This machine's address on the veth pair, as seen from the guest."""
        return f"{NET_PREFIX}.{self._need_slot()}.1"

    @property
    def pid1(self) -> int:
        """The guest's systemd, as a pid in this machine's pid namespace."""
        if self._pid1 is None:
            raise TestHostError("test host is not running")
        return self._pid1

    @property
    def rootfs(self) -> Path:
        """The guest's root directory on this machine.

        In overlay mode this is ``/proc/<pid1>/root`` (valid while the guest runs), which shows
        the guest's own mounts. In copy mode it is the copy, where the guest's /run, /tmp and
        other mounts are not visible; :meth:`read_file` and :meth:`write_file` work in both.
        """
        if self.mode == "overlay":
            return self.guest_path("/")
        if self._rootfs is None:
            raise TestHostError("test host is not started")
        return self._rootfs

    @property
    def statedir(self) -> Path:
        """Directory bind-mounted into the guest's /run/dbus and /run/podman (``dbus/``, ``podman/``).

        The guest's /run is a tmpfs only it can see, so its sockets are published through here.
        """
        if self._workdir is None:
            raise TestHostError("test host is not started")
        return self._workdir / "state"

    @property
    def bus_address(self) -> str:
        """D-Bus address of the guest's system bus (root here authenticates as uid 0 there)."""
        return f"unix:path={self.statedir / 'dbus' / 'system_bus_socket'}"

    @property
    def podman_socket(self) -> str:
        """URL of the guest's Podman API socket, as podman-py and ``podman --url`` take it."""
        return f"unix://{self.statedir / 'podman' / 'podman.sock'}"

    @property
    def host_ifname(self) -> str:
        """This machine's end of the veth pair."""
        if self._host_ifname is None:
            raise TestHostError("test host is not running")
        return self._host_ifname

    def url(self, port: int, path: str = "/") -> str:
        """An http URL for a port published on the guest's address."""
        return f"http://{self.ip}:{port}{path}"

    @property
    def running(self) -> bool:
        """True while systemd-nspawn is alive."""
        return self._nspawn is not None and self._nspawn.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> TestHost:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Copy the tree, boot it and wait until systemd reports the system running.

        Cleans up after itself if anything fails, so a failed start leaves nothing behind.
        """
        if self._slot is not None:
            raise TestHostError("test host already started")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _acquire_slot(self) -> None:
        """Take the first free slot, skipping any whose machine outlived its owner."""
        for index in range(MAX_SLOTS):
            fd = _try_lock_slot(index)
            if fd is None:
                continue
            name = f"{NAME_PREFIX}{index}"
            busy = [r / name for r in cgroup_roots() if _cgroup_pids(r / name)]
            if busy or Path(f"/sys/class/net/ve-{name}").exists():
                logger.warning("slot %d is free but machine %s still runs (orphan?); skipping it", index, name)
                os.close(fd)
                continue
            self._slot, self._slot_fd = index, fd
            for stale in WORK_ROOT.glob(f"{name}-*"):  # left by a killed run; the lock says it's ours
                _rmtree(stale)
            for root in cgroup_roots():
                _remove_cgroup(root / name)
            return
        raise TestHostError(f"all {MAX_SLOTS} test host slots are in use")

    def _start(self) -> None:
        t0 = time.monotonic()
        template = self.template or build_rootfs()
        self._acquire_slot()
        name = self.name
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK_ROOT))
        self._workdir.chmod(0o755)
        self._template = template
        if template.parent.parent == CACHE_ROOT and self.mode != "inplace":
            self._in_use_fd = _try_flock(_in_use_lock(template.parent.name), fcntl.LOCK_SH)
            if self._in_use_fd is None:
                raise TestHostError(f"{template} is being replaced or deleted; try again")
        if not template.is_dir():
            raise TestHostError(f"no guest tree at {template}")
        # A distinct hostname (and machine id, below) per host keep hosts and their logs apart.
        if self.mode == "overlay":
            _run(["cp", "-a", str(template / CONTAINER_STORAGE), str(self._workdir / "containers")], timeout=300)
            (self._workdir / "hostname").write_text(name + "\n")
        elif self.mode == "copy":
            self._rootfs = self._workdir / "rootfs"
            _run(["cp", "-a", "--reflink=auto", str(template), str(self._rootfs)], timeout=300)
            (self._rootfs / "etc" / "hostname").write_text(name + "\n")
        else:
            self._rootfs = template
        t1 = time.monotonic()
        self.timings["copy_s"] = t1 - t0
        for sub in ("dbus", "podman"):
            (self.statedir / sub).mkdir(parents=True, exist_ok=True)

        self.machine_id = uuid.uuid4().hex if self.mode != "inplace" else ""
        self._launch()
        self._wait_for_init()
        self._setup_network()
        self._wait_until_running()
        actual = self.read_file("/etc/machine-id").strip()
        if self.machine_id and actual != self.machine_id:
            logger.warning("guest %s ignored systemd.machine_id=%s; it has %s", name, self.machine_id, actual)
        self.machine_id = actual
        self.timings["boot_s"] = time.monotonic() - t1
        logger.info(
            "test host %s up (pid1 %d, %s) in %.2f s (copy %.2f s)",
            name,
            self.pid1,
            self.ip,
            self.timings["boot_s"],
            self.timings["copy_s"],
        )

    def _launch(self) -> None:
        """Start systemd-nspawn in the background, in its own session and its own cgroups."""
        name = self.name
        console = self._workdir_path("console.log")
        workdir = self._workdir_path("")
        template = self._template if self.mode == "overlay" else self.rootfs
        argv = [
            "systemd-nspawn",
            "--boot",
            f"--directory={template}",
            f"--machine={name}",
            # No machined on this kind of machine; the host cgroup we made is "the unit".
            "--register=no",
            # Without it nspawn fails with "Failed to open system bus".
            "--keep-unit",
            "--console=read-only",
            "--link-journal=no",
            # Without these two syscall groups every container started by a systemd service fails
            # ("crun: create keyring … / bpf create … Operation not permitted").
            "--system-call-filter=bpf @keyring",
            # A private network: netavark needs a writable /proc/sys/net, and tests need an address.
            "--network-veth",
            f"--bind={self.statedir / 'dbus'}:/run/dbus",
            f"--bind={self.statedir / 'podman'}:/run/podman",
        ]
        if self.mode == "overlay":
            argv += [
                "--volatile=overlay",
                f"--bind={workdir / 'containers'}:/{CONTAINER_STORAGE}",
                f"--bind-ro={workdir / 'hostname'}:/etc/hostname",
            ]
        env = {
            "PATH": SAFE_PATH,
            "LANG": "C.UTF-8",
            # Without it the guest gets read-only cgroup v1 controllers on a hybrid machine and crun
            # fails with "create directory /sys/fs/cgroup/cpuset/container".
            "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
        }
        if self.machine_id:
            # Arguments after the options go to the guest's systemd, which reads them as its
            # kernel command line.
            argv.append(f"systemd.machine_id={self.machine_id}")
        if _host_runs_systemd():
            # Let the host's systemd make the cgroup: a delegated transient scope, which is what
            # --keep-unit expects to find itself in.
            argv = [
                "systemd-run",
                "--scope",
                "--quiet",
                "--collect",
                "--property=Delegate=yes",
                f"--unit=ozwald-testhost-{name}",
                "--",
                *argv,
            ]
        else:
            for root in cgroup_roots():
                group = root / name
                group.mkdir(exist_ok=True)
                self._cgroups.append(group)
        cgroups = list(self._cgroups)
        libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child should only make calls
        with console.open("wb") as log:
            self._nspawn = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # setsid: Ctrl-C in a terminal goes to us, not to the guest
                preexec_fn=lambda: _pdeathsig_and_cgroups(libc, cgroups),
            )

    def _workdir_path(self, name: str) -> Path:
        if self._workdir is None:
            raise TestHostError("test host is not started")
        return self._workdir / name

    def _boot_failure(self, what: str) -> TestHostError:
        console = _tail(self._workdir_path("console.log"))
        return TestHostError(f"test host {self.name}: {what}\n--- console (last lines) ---\n{console}")

    def _check_alive(self) -> None:
        if self._nspawn is None or self._nspawn.poll() is not None:
            status = None if self._nspawn is None else self._nspawn.returncode
            raise self._boot_failure(f"systemd-nspawn exited with status {status} during boot")

    def _wait_for_init(self) -> None:
        assert self._nspawn is not None
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            pid = _guest_init(self._nspawn.pid)
            if pid is not None:
                self._pid1 = pid
                return
            time.sleep(0.005)
        raise self._boot_failure(f"guest systemd did not start within {self.boot_timeout} s")

    def _setup_network(self) -> None:
        """Address both ends of the veth pair: host .1 and guest .2 of 10.213.N.0/30.

        The host end is found through host0's peer index rather than by guessing nspawn's
        naming ("ve-<machine>", shortened differently across systemd versions). No default
        route is added: the guest must never reach anything but this machine.
        """
        link = _run(["nsenter", "-t", str(self.pid1), "-n", "ip", "-o", "link", "show", "host0"]).stdout
        match = re.search(r"host0@if(\d+)", link)
        if not match:
            raise self._boot_failure(f"cannot find the peer of host0 in {link!r}")
        peer = match.group(1)
        for iface in Path("/sys/class/net").iterdir():
            with contextlib.suppress(OSError):
                if (iface / "ifindex").read_text().strip() == peer:
                    self._host_ifname = iface.name
                    break
        if self._host_ifname is None:
            raise self._boot_failure(f"no host interface with index {peer}")
        _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self._host_ifname])
        _run(["ip", "link", "set", self._host_ifname, "up"])
        guest = ["nsenter", "-t", str(self.pid1), "-n"]
        _run([*guest, "ip", "addr", "add", f"{self.ip}/30", "dev", "host0"])
        _run([*guest, "ip", "link", "set", "host0", "up"])
        _run([*guest, "ip", "link", "set", "lo", "up"])

    def _wait_until_running(self) -> None:
        """Wait for ``systemctl is-system-running`` to say running (or degraded, reported)."""
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            remaining = max(1.0, deadline - time.monotonic())
            # Until the bus is up systemctl fails at once; afterwards --wait blocks until boot ends.
            result = self.exec(["systemctl", "is-system-running", "--wait"], timeout=remaining)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                break
            if state in ("stopping", "maintenance"):
                raise self._boot_failure(f"system state is {state!r}")
            time.sleep(0.01)
        else:
            raise self._boot_failure(f"not running after {self.boot_timeout} s (last state {state!r})")
        if state == "degraded":
            self.failed_units = self.list_failed_units()
            message = f"test host {self.name} booted degraded; failed units: {', '.join(self.failed_units)}"
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def list_failed_units(self) -> list[str]:
        """Names of the guest's failed units."""
        result = self.exec(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--full"])
        return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        """Halt the guest and remove everything the host used. Safe to call more than once.

        SIGTERM makes nspawn shut the guest down cleanly (1–2 s); SIGKILL and killing what is left
        in the machine's cgroups is the fallback. Errors are collected so that every step runs.
        """
        t0 = time.monotonic()
        errors: list[str] = []
        proc = self._nspawn
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                errors.append(f"systemd-nspawn did not exit within {self.stop_timeout} s; killed it")
                proc.kill()
                proc.wait(timeout=10)
        self._nspawn = None
        self._pid1 = None
        for group in self._cgroups:
            try:
                _remove_cgroup(group)
            except TestHostError as err:
                errors.append(str(err))
        self._cgroups = []
        if self._slot is not None:
            # nspawn makes this directory on the host and may fail to remove it (harmless message
            # 'Attempted to remove disk file system under "/run/systemd/nspawn/propagate/…"').
            with contextlib.suppress(OSError):
                shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}")
        if self._workdir is not None:
            try:
                if self.keep:
                    kept = WORK_ROOT / f"kept-{self._workdir.name}"
                    self._workdir.rename(kept)
                    logger.info("kept %s", kept)
                else:
                    _rmtree(self._workdir)
            except (OSError, TestHostError) as err:
                errors.append(f"cannot remove {self._workdir}: {err}")
        self._workdir = None
        self._rootfs = None
        self._template = None
        self._host_ifname = None
        if self._in_use_fd is not None:
            os.close(self._in_use_fd)
            self._in_use_fd = None
        if self._slot_fd is not None:
            os.close(self._slot_fd)
        self._slot = None
        self._slot_fd = None
        self.timings["stop_s"] = time.monotonic() - t0
        if errors:
            raise TestHostError("teardown was not clean: " + "; ".join(errors))

    # -- talking to the guest ---------------------------------------------------------------

    def _nsenter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid1), *NSENTER_FLAGS]

    def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the guest's namespaces with plain nsenter.

        Quick, and right for systemctl, journalctl, podman queries and file work. It skips
        nspawn's seccomp filter, so it can succeed where a systemd service would fail: use
        :meth:`run` for anything that should behave like a service.
        """
        return _run([*self._nsenter(), "--", *argv], check=check, timeout=timeout, env=GUEST_ENV, input=input)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        properties: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run a command the way a service would: as a transient unit of the guest's systemd.

        ``systemd-run --pipe --wait`` connects the unit's stdio to ours and returns its exit
        status. ``env`` sets unit environment variables; ``properties`` are ``-p`` unit
        properties such as ``"User=nobody"``.
        """
        cmd = [*self._nsenter(), "--", "systemd-run", "--pipe", "--wait", "--quiet", "--collect"]
        for key, value in (env or {}).items():
            cmd.append(f"--setenv={key}={value}")
        for prop in properties:
            cmd.append(f"--property={prop}")
        cmd += ["--", *argv]
        return _run(cmd, check=check, timeout=timeout, env=GUEST_ENV, input=input)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` in the guest (through :meth:`exec`; systemctl only talks to PID 1)."""
        return self.exec(["systemctl", *args], check=check, timeout=timeout)

    def journal(self, unit: str | None = None, *, lines: int = 200) -> str:
        """The guest's journal since boot, for one unit or all, as text (for assertion messages)."""
        argv = ["journalctl", "--no-pager", "--boot", "-o", "short-precise", "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        return self.exec(argv).stdout

    def guest_path(self, path: str) -> Path:
        """This machine's view of a path in the guest, through /proc/<pid1>/root.

        This sees the guest's mounts (its /run, /tmp). Absolute symlinks inside the guest resolve
        against this machine's root, so do not rely on them here.
        """
        return Path(f"/proc/{self.pid1}/root") / path.lstrip("/")

    def write_file(self, guest_path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file in the guest, creating parent directories, owned by root."""
        path = self.guest_path(guest_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        path.chmod(mode)

    def read_file(self, guest_path: str) -> str:
        """Read a text file from the guest."""
        return self.guest_path(guest_path).read_text()

    def read_bytes(self, guest_path: str) -> bytes:
        """Read a file from the guest as bytes."""
        return self.guest_path(guest_path).read_bytes()

    def describe(self) -> str:
        """A few lines saying how to reach this host by hand."""
        return "\n".join(
            [
                f"name:          {self.name}",
                f"pid1:          {self.pid1}",
                f"ip:            {self.ip}  (host side {self.host_ip} on {self.host_ifname})",
                f"rootfs:        {self.rootfs}",
                f"bus_address:   {self.bus_address}",
                f"podman_socket: {self.podman_socket}",
                f"shell:         nsenter -t {self.pid1} -a /bin/bash",
                f"systemctl:     busctl --address={self.bus_address} tree org.freedesktop.systemd1 | head",
            ]
        )
