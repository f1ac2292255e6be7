# SPDX-License-Identifier: AGPL-3.0-or-later
"""An instance's published status, computed from what is desired and what systemd and the unit files say.

One pure function of its inputs (`describe`), so every rule can be tested table by table, and the rules
are the promise an orchestrator routes traffic on:

- `available` only when the unit is active and the invocation that runs was started from the unit file
  of the spec that is desired now. systemd calls a unit active only once it is ready: healthy with a
  health check (Notify=healthy), else up for the minimum uptime (the unit's ExecStartPost gate).
- While an instance moves from one spec to another (or a start or restart Ozwald queued has not ended),
  it is `starting`, and `variety`/`profile` say what runs now; `info.pending` says what it moves to.
- A unit that systemd is restarting after a crash is `starting`, with the restart count and the last
  exit in `info.reason`; once systemd gives up it is `failed`.
- `failed` always carries `info.reason`.
- An on-demand instance is `idle` while its socket listens and no container of it runs (a connection starts
  it: `starting`, then `available`), `stopping` while its container stops for idleness; a failed start or a
  failed socket is `failed` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ozwald.records import ActiveService, DesiredInstance, OnDemandInfo, ServiceInfo, Status
from ozwald.systemd.protocol import UnitState, describe_exit

RUNNING_STATES = ("active", "activating", "reloading", "deactivating")
DOWN_STATES = ("inactive", "failed")


@dataclass(frozen=True)
class RunningSpec:
    """Which spec a unit's current invocation runs: read from the unit file it was started from."""

    spec_hash: str | None
    service: str | None
    variety: str | None
    profile: str | None


@dataclass(frozen=True)
class Observed:
    """Everything known about one instance's unit: the inputs of `describe` besides the desired instance.

    `running`: the spec the current invocation runs; None when nothing runs or it cannot be told (a change
    interrupted by a restart of Ozwald). `job`: a start, restart or stop Ozwald queued that has not ended.
    `refused`: systemd refused to queue the job. `failure`: the explained reason of a failed unit.
    """

    state: UnitState | None = None
    running: RunningSpec | None = None
    job: str | None = None
    refused: str | None = None
    failure: str | None = None
    container_id: str | None = None


def since(state: UnitState | None) -> str | None:
    if state is None or not state.state_change_usec:
        return None
    return datetime.fromtimestamp(state.state_change_usec / 1e6, tz=UTC).isoformat()


def status_of(observed: Observed, target_hash: str | None) -> Status:
    """The status of a desired container instance whose wanted spec hash is `target_hash`."""
    state = observed.state
    if observed.refused is not None:
        return "failed"
    if state is None or state.load_state != "loaded":
        return "starting" if observed.job is not None else "failed"
    active = state.active_state
    if active == "failed":
        return "starting" if observed.job is not None else "failed"
    if active == "inactive":
        return "starting" if observed.job is not None else "failed"
    if active == "active" and observed.job is None and observed.running is not None \
            and observed.running.spec_hash == target_hash:
        return "available"
    return "starting"  # activating, reloading, deactivating, or active under another spec / with a job queued


def restarting(state: UnitState | None) -> bool:
    """systemd is restarting the unit on its own, after a crash (its Restart= policy)."""
    return state is not None and state.n_restarts > 0 and state.active_state in ("activating", "deactivating")


def describe(instance: DesiredInstance, target_hash: str | None, observed: Observed, generation: int,
             unit: str) -> ActiveService:
    """What GET /srv/services/active/ says of one desired container instance."""
    state = observed.state
    status = status_of(observed, target_hash)
    info: dict[str, Any] = {"unit": unit, "generation": generation, "spec_hash": target_hash}
    if instance.variety_auto:
        info["variety_chosen"] = f"{instance.variety} (picked for this host)"
    variety, profile = instance.variety, instance.profile
    running = observed.running
    if state is not None:
        info.update({"active_state": state.active_state, "sub_state": state.sub_state, "since": since(state),
                     "restarts": state.n_restarts})
    info["running_spec_hash"] = running.spec_hash if running is not None else None
    moving = running is None or running.spec_hash != target_hash or observed.job is not None
    if status == "starting" and moving:
        info["pending"] = {"variety": instance.variety, "profile": instance.profile, "spec_hash": target_hash,
                           "job": observed.job}
        old_still_runs = (running is not None and running.spec_hash != target_hash and state is not None
                          and state.active_state in RUNNING_STATES)
        if old_still_runs and running is not None:
            variety, profile = running.variety, running.profile
    if status == "starting" and restarting(state) and state is not None:
        info["restarting"] = True
        info["reason"] = (f"restarting after a crash ({state.n_restarts} restart"
                          f"{'' if state.n_restarts == 1 else 's'} so far); last run {describe_exit(state)}")
    if status == "available" and state is not None:
        info["container_id"] = observed.container_id
        info["invocation"] = state.invocation_id or None
    if status == "failed":
        info["reason"] = observed.refused or observed.failure or "failed (no reason known yet)"
        if state is not None:
            info["result"] = state.result
            info["exit_status"] = state.exec_main_status
    return ActiveService(name=instance.name, service=instance.service, variety=variety, profile=profile,
                         status=status, info=ServiceInfo.model_validate(info))


@dataclass(frozen=True)
class SocketObserved:
    """An on-demand instance's socket: its state, a job Ozwald queued on it, and what the status shows of it."""

    state: UnitState | None
    job: str | None
    info: OnDemandInfo


def on_demand_status(observed: Observed, socket: SocketObserved, target_hash: str | None) -> Status:
    """The status of a desired on-demand instance: its container's status, except that a container that is
    down while the socket listens is `idle`, and a container that stops by itself (idleness) is `stopping`."""
    state = observed.state
    if observed.refused is not None:
        return "failed"
    if state is not None and state.active_state == "failed" and observed.job is None:
        return "failed"
    if status_of(observed, target_hash) == "available":
        return "available"
    sock = socket.state
    if sock is None or sock.load_state != "loaded" or sock.active_state in DOWN_STATES:
        return "starting" if socket.job is not None or observed.job is not None else "failed"
    if sock.active_state != "active" or socket.job is not None:
        return "starting"
    if state is None or state.active_state == "inactive":  # a unit whose file is gone may still run: not idle
        return "starting" if observed.job is not None else "idle"
    if observed.job == "stop" and state.active_state != "failed":
        return "stopping"  # Ozwald stops it: a sleep, or a partner's start in a swap
    if state.active_state == "deactivating" and observed.job is None and not restarting(state) \
            and state.result in ("", "success"):
        return "stopping"  # for idleness; a container whose start failed also passes here, on its way to failed
    return "starting"


def describe_on_demand(instance: DesiredInstance, target_hash: str | None, observed: Observed,
                       socket: SocketObserved, generation: int, unit: str) -> ActiveService:
    """What GET /srv/services/active/ says of one desired on-demand instance: `describe`'s, with the socket's
    side in `info.on_demand`, and the reason of a status only an on-demand instance has."""
    status = on_demand_status(observed, socket, target_hash)
    base = describe(instance, target_hash, observed, generation, unit)
    info = base.info.model_dump()
    sock = socket.state
    info["on_demand"] = socket.info.model_copy(update={
        "socket_state": f"{sock.active_state}/{sock.sub_state}" if sock is not None else None}).model_dump()
    container_failed = observed.state is not None and observed.state.active_state == "failed"
    if status == "failed" and observed.refused is None and not container_failed:
        for key in ("result", "exit_status"):
            info.pop(key, None)
        what = f"{sock.active_state} ({sock.result})" if sock is not None else "not loaded"
        info["reason"] = (f"the socket {socket.info.socket} is {what}: connections are refused until Ozwald "
                          "starts it again")
    elif status in ("idle", "stopping"):
        for key in ("pending", "result", "exit_status"):
            info.pop(key, None)
        info["reason"] = (f"idle: {socket.info.socket} listens on {socket.info.listen}; the next connection "
                          "starts the container") if status == "idle" else (
            "stopping after idle_stop without a connection" if observed.job is None else
            "stopping on purpose (a sleep, or the start of an instance it swaps with)") + (
            "; a connection now is held and served by the next start")
    return base.model_copy(update={"status": status, "info": ServiceInfo.model_validate(info)})


def describe_resource(instance: DesiredInstance, kind: str, generation: int) -> ActiveService:
    """A desired instance of a non-container service (source files, …): nothing runs, so nothing can fail."""
    return ActiveService(name=instance.name, service=instance.service, variety=instance.variety,
                         profile=instance.profile, status="available",
                         info=ServiceInfo(unit=None, generation=generation,
                                          reason=f"{kind}: a resource, not a container"))


def describe_unresolved(instance: DesiredInstance, reason: str, state: UnitState | None, generation: int,
                        unit: str) -> ActiveService:
    """A desired instance the current settings cannot run (its profile, variety or service was removed, a
    secret file cannot be read): failed with the cause. Whatever its unit still runs is an old spec, stopped by
    the reconciler, so it is never available."""
    info: dict[str, Any] = {"unit": unit, "generation": generation, "spec_hash": None, "running_spec_hash": None,
                            "reason": f"cannot run under the current settings: {reason}"}
    if state is not None:
        info.update({"active_state": state.active_state, "sub_state": state.sub_state, "since": since(state),
                     "restarts": state.n_restarts})
    return ActiveService(name=instance.name, service=instance.service, variety=instance.variety,
                         profile=instance.profile, status="failed", info=ServiceInfo.model_validate(info))


def describe_leaving(name: str, state: UnitState, running: RunningSpec | None, generation: int) -> ActiveService:
    """A unit no longer desired that still runs: it is being stopped."""
    return ActiveService(name=name, service=(running.service if running and running.service else name),
                         variety=running.variety if running else None, profile=running.profile if running else None,
                         status="stopping",
                         info=ServiceInfo(unit=state.name, generation=generation, active_state=state.active_state,
                                          sub_state=state.sub_state, since=since(state), restarts=state.n_restarts))
