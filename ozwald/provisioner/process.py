"""`ozwald serve`: the provisioner process (API + reconciler), as its systemd unit runs it.

Operator errors (settings that do not validate, an unknown provisioner, a missing or short API key)
exit with status 2, which the unit treats as final instead of restarting in a loop.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ozwald.api import ApiKeyError, create_server, key_from_env
from ozwald.config import Settings
from ozwald.podman import PODMAN_SOCKET_ENV, PodmanInspector, podman_version
from ozwald.provisioner.core import Provisioner
from ozwald.provisioner.reconciler import Reconciler
from ozwald.resources import HostResourceMonitor
from ozwald.state import DesiredStateStore, Identity, ProfileQueue, ProfileResults, StatusCache, connect
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


def listen_address(identity: Identity, host: str | None, port: int | None) -> Listen:
    """Flags win, then $OZWALD_API_HOST/$OZWALD_API_PORT, then the provisioner's `api` settings."""
    api = identity.provisioner.api
    env_port = os.environ.get(PORT_ENV)
    return Listen(host=host or os.environ.get(HOST_ENV) or str(api.bind),
                  port=port or (int(env_port) if env_port else api.port), threads=api.threads)


def build(settings: Settings, identity: Identity) -> Provisioner:
    prov = identity.provisioner
    redis = connect(prov.cache.parameters, check=False)
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


def serve(settings: Settings, identity: Identity, host: str | None = None, port: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        key = key_from_env()
    except ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    listen = listen_address(identity, host, port)
    provisioner = build(settings, identity)
    server = create_server(provisioner, key, host=listen.host, port=listen.port, threads=listen.threads)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.close()

    signal.signal(signal.SIGTERM, stop)

    def exit_when_the_bus_is_lost() -> None:
        provisioner.reconciler.bus_lost.wait()
        log.error("exiting so that systemd restarts the provisioner with a new bus connection")
        server.close()

    provisioner.start()
    threading.Thread(target=exit_when_the_bus_is_lost, name="ozwald-bus-watch", daemon=True).start()
    log.info("provisioner %s (%s) serving on %s", identity.name, identity.reason, server.url)
    try:
        server.run()
    finally:
        provisioner.stop()
    return 1 if provisioner.reconciler.bus_lost.is_set() else 0
