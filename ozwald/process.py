# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald serve`: the provisioner process (API + reconciler), as its systemd unit runs it.

Operator errors (settings that do not validate, an unknown provisioner, a missing or short API key)
exit with status 2, which the unit treats as final instead of restarting in a loop.

Under systemd (`Type=notify`) the process tells the service manager how it is doing
(:class:`ServiceManagerLink`): `READY=1` once the API socket listens and the reconciler's first pass has
read systemd; `WATCHDOG=1` only while the reconciler's loop keeps turning; `STATUS=` with the instance
counts; and on SIGHUP (`systemctl reload ozwald`) it re-reads the settings file, keeping the old
settings when the new file does not validate.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ozwald.api import ApiKeyError, create_server, key_from_env
from ozwald.config import ConfigError, Settings, load_settings
from ozwald.podman import PODMAN_SOCKET_ENV, PodmanInspector, podman_version
from ozwald.provisioner.core import Provisioner
from ozwald.provisioner.notify import Notifier, watchdog_interval
from ozwald.provisioner.reconciler import Reconciler
from ozwald.resources import HostResourceMonitor
from ozwald.state import (
    DesiredStateStore,
    Identity,
    IdentityError,
    ProfileQueue,
    ProfileResults,
    StatusCache,
    connect,
    select_provisioner,
)
from ozwald.state.env import cache_parameters
from ozwald.systemd import SystemdClient
from ozwald.units import UnitStore

log = logging.getLogger("ozwald")
HOST_ENV = "OZWALD_API_HOST"
PORT_ENV = "OZWALD_API_PORT"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    threads: int
    metrics: bool = True


def listen_address(identity: Identity, host: str | None, port: int | None) -> Listen:
    """Flags win, then $OZWALD_API_HOST/$OZWALD_API_PORT, then the provisioner's `api` settings."""
    api = identity.provisioner.api
    env_port = os.environ.get(PORT_ENV)
    return Listen(host=host or os.environ.get(HOST_ENV) or str(api.bind),
                  port=port or (int(env_port) if env_port else api.port), threads=api.threads, metrics=api.metrics)


def build(settings: Settings, identity: Identity) -> Provisioner:
    prov = identity.provisioner
    redis = connect(cache_parameters(prov), check=False)
    systemd = SystemdClient.shared()
    podman = PodmanInspector(os.environ.get(PODMAN_SOCKET_ENV))
    version = podman_version(podman)
    units = UnitStore()

    def reconciler(read_desired: Any, publish: Any) -> Reconciler:
        return Reconciler(settings, read_desired, systemd, units, publish, podman=podman, podman_version=version,
                          resync_interval=prov.resync_interval)

    return Provisioner(settings, DesiredStateStore(redis, identity.name, Path(prov.state_dir)),
                       StatusCache(redis, identity.name),
                       ProfileQueue(redis, identity.name, settings=settings, state_dir=prov.state_dir),
                       HostResourceMonitor(), systemd, reconciler,
                       results=ProfileResults(redis, identity.name, state_dir=prov.state_dir),
                       profiling=prov.profiling, admission=prov.admission)


def status_line(services: list[Any]) -> str:
    """`STATUS=` for `systemctl status`: how many instances are in each state."""
    counts: dict[str, int] = {}
    for service in services:
        counts[str(service.status)] = counts.get(str(service.status), 0) + 1
    parts = [f"{counts.pop(state, 0)} {state}" for state in ("available", "starting", "failed")]
    parts += [f"{n} {state}" for state, n in sorted(counts.items())]
    return f"{len(services)} instance{'s' if len(services) != 1 else ''}: " + ", ".join(parts)


class ServiceManagerLink:
    """What systemd hears from the provisioner: READY=1, WATCHDOG=1, STATUS= and reloads.

    One thread: it sends READY=1 once the reconciler's first pass is done (the API socket is bound
    before this starts), then every `tick` seconds a WATCHDOG=1 if the reconciler's loop turned
    recently (it turns at least every second; a wedged loop stops the pings, so systemd restarts the
    process), and STATUS= when the counts change. SIGHUP asks it to re-read the settings file.
    """

    def __init__(self, provisioner: Provisioner, identity: Identity, config_path: str | None,
                 notifier: Notifier | None = None, watchdog: float | None = None) -> None:
        self.provisioner = provisioner
        self.identity = identity
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.watchdog = watchdog if watchdog is not None else watchdog_interval()
        # Stale after half the watchdog period (at most 10 s): systemd still gets a ping in time.
        self.stale_after = min(10.0, self.watchdog / 2) if self.watchdog else 10.0
        self.tick = min(1.0, self.watchdog / 4) if self.watchdog else 1.0
        self.ready = threading.Event()
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._status = ""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ozwald-sd-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.notifier.stopping()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def request_reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._reload.set()  # a signal handler does nothing else: the thread below does the work

    def reconciler_alive(self) -> bool:
        reconciler = self.provisioner.reconciler
        return (time.monotonic() - reconciler.heartbeat) < self.stale_after and not reconciler.bus_lost.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.ready.is_set() and self.provisioner.reconciler.first_pass_done.is_set():
                self._update_status(force=True)
                self.notifier.ready()
                self.ready.set()
                log.info("ready: the API listens and the first pass has read systemd")
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if self.watchdog and self.reconciler_alive():
                self.notifier.watchdog()
            if self.ready.is_set():
                self._update_status()
            self._stop.wait(self.tick)

    def _update_status(self, force: bool = False) -> None:
        try:
            line = status_line(self.provisioner.active_services())
        except Exception:  # a status line must never take the process down
            return
        if force or line != self._status:
            self._status = line
            self.notifier.status(line)

    def reload(self) -> bool:
        """Re-read the settings file: valid settings are swapped in and reconciled at once; otherwise
        each problem is logged as `file:line: field: message` and the old settings stay in force."""
        self.notifier.reloading()
        ok = False
        try:
            if self.config_path is None:
                log.error("reload: no settings file to re-read")
                return False
            try:
                settings = load_settings(Path(self.config_path))
                select_provisioner(settings, self.identity.name)
            except ConfigError as exc:
                for issue in exc.issues:
                    log.error("reload refused, old settings kept: %s", issue)
                return False
            except IdentityError as exc:
                log.error("reload refused, old settings kept: %s: %s", self.config_path, exc)
                return False
            self.provisioner.replace_settings(settings)
            log.info("reload: %s re-read (%d services); reconciling", self.config_path, len(settings.services))
            ok = True
            return True
        finally:
            self.notifier.send(ready=1, status=self._status or ("reloaded" if ok else "reload refused"))


def serve(settings: Settings, identity: Identity, host: str | None = None, port: int | None = None,
          config_path: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        key = key_from_env()
    except ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    listen = listen_address(identity, host, port)
    provisioner = build(settings, identity)
    server = create_server(provisioner, key, host=listen.host, port=listen.port, threads=listen.threads,
                           metrics=listen.metrics)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.close()

    signal.signal(signal.SIGTERM, stop)
    link = ServiceManagerLink(provisioner, identity, config_path)
    signal.signal(signal.SIGHUP, link.request_reload)

    def exit_when_the_bus_is_lost() -> None:
        provisioner.reconciler.bus_lost.wait()
        log.error("exiting so that systemd restarts the provisioner with a new bus connection")
        server.close()

    provisioner.start()
    link.start()
    threading.Thread(target=exit_when_the_bus_is_lost, name="ozwald-bus-watch", daemon=True).start()
    # What exists now (modules, settings, pydantic schemas) lives as long as the process: frozen, it is
    # no longer walked by every full garbage collection, whose pauses showed in the GET latency tail.
    gc.freeze()
    log.info("provisioner %s (%s) serving on %s", identity.name, identity.reason, server.url)
    try:
        server.run()
    finally:
        link.stop()
        provisioner.stop()
    return 1 if provisioner.reconciler.bus_lost.is_set() else 0
