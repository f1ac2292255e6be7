# SPDX-License-Identifier: AGPL-3.0-or-later
"""Desired set vs what is on this host: which instances to start, stop, restart or leave alone.

A pure function of its inputs, so the reconciler and the plan endpoint (dry run) say the same thing.
The actual side is what Ozwald finds on disk and in systemd: its unit files with their spec hash and
labels, and the units' states.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from ozwald.config import ResolveError, Settings, resolve
from ozwald.provisioner.status import RUNNING_STATES, RunningSpec
from ozwald.quadlet.naming import unit_name
from ozwald.quadlet.stored import StoredUnit
from ozwald.records import DesiredInstance, PlanAction, PlanCause, PlanEntry
from ozwald.systemd.protocol import UnitState

_LABEL_FIELDS = ("service", "variety", "profile")


@dataclass(frozen=True)
class Target:
    """A desired container instance, rendered: its unit text and spec hash."""

    instance: DesiredInstance
    spec_hash: str
    text: str | None = None  # the rendered unit; None when only the hash is compared


def _env_changes(settings: Settings, old: StoredUnit, new: DesiredInstance) -> list[str]:
    """Environment keys that differ between the old and new (service, variety, profile), under the current
    settings. Empty when the old triple no longer resolves."""
    try:
        before = resolve(settings, old.label("service") or "", old.label("variety"), old.label("profile")).env
        after = resolve(settings, new.service, new.variety, new.profile).env
    except ResolveError:
        return []
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _why_restart(settings: Settings, old: StoredUnit, new: DesiredInstance) -> str:
    changes = []
    for field in _LABEL_FIELDS:
        before, after = old.label(field), getattr(new, field)
        if before != after:
            changes.append(f"{field} {before or '-'} → {after or '-'}")
    env = _env_changes(settings, old, new)
    why = ", ".join(changes) if changes else "the configuration changed"
    if env:
        why += f" changes {', '.join(env)}"
    return f"restart: {why}"


def plan(settings: Settings, targets: Sequence[Target], units: Mapping[str, StoredUnit],
         states: Mapping[str, UnitState], stale: Collection[str] = ()) -> list[PlanEntry]:
    """One entry per instance that is desired or present, in a stable order.

    `stale`: instances whose running container was started before their unit file was last written (a
    change that an interrupted provisioner wrote but never applied): they restart even if the file matches.
    """
    entries: list[PlanEntry] = []
    wanted = {t.instance.name for t in targets}
    for target in targets:
        instance = target.instance
        name = instance.name

        def entry(action: PlanAction, cause: PlanCause, reason: str, instance: DesiredInstance = instance
                  ) -> PlanEntry:
            return PlanEntry(name=instance.name, action=action, reason=reason, service=instance.service,
                             variety=instance.variety, profile=instance.profile, cause=cause)

        existing = units.get(name)
        state = states.get(unit_name(name))
        if existing is None:
            auto = " (variety chosen for this host)" if instance.variety_auto else ""
            entries.append(entry("start", "new", f"start: new instance{auto}"))
        elif existing.spec_hash != target.spec_hash:
            entries.append(entry("restart", "changed", _why_restart(settings, existing, instance)))
        elif target.text is not None and existing.text != target.text:
            entries.append(entry("restart", "changed", "restart: the unit file changed (same settings, new rendering)"))
        elif state is None or state.active_state in ("inactive", "failed"):
            was = state.active_state if state is not None else "not loaded"
            entries.append(entry("start", "ended", f"start: unchanged but {was}"))
        elif name in stale:
            entries.append(entry("restart", "stale", "restart: the running container predates its unit file "
                                                     "(a change was written but not applied)"))
        else:
            entries.append(entry("keep", "unchanged", f"keep: unchanged and {state.active_state}"))
    for name in sorted(set(units) - wanted):
        existing = units[name]
        entries.append(PlanEntry(name=name, action="stop", reason="stop: no longer in the desired set",
                                 service=existing.label("service"), variety=existing.label("variety"),
                                 profile=existing.label("profile"), cause="removed"))
    return entries


def spec_of(unit: StoredUnit) -> RunningSpec:
    return RunningSpec(unit.spec_hash, unit.label("service"), unit.label("variety"), unit.label("profile"))


def started_from(unit: StoredUnit, state: UnitState) -> bool:
    """The unit's current invocation was started after its file was last written, so runs that file's spec."""
    return state.exec_main_start_usec >= unit.written_usec


def stale(files: Mapping[str, StoredUnit], states: Mapping[str, UnitState]) -> set[str]:
    """Instances whose running container was started before their unit file was written."""
    return {name for name, stored in files.items()
            if (state := states.get(unit_name(name))) is not None and state.active_state in RUNNING_STATES
            and state.exec_main_start_usec and not started_from(stored, state)}


def hold_failed(entry: PlanEntry, state: UnitState | None, new_generation: bool) -> PlanEntry:
    """An unchanged instance that ran and ended stays ended until the desired set is posted again: systemd's
    Restart= policy already decided to give up on it. One written but never started still starts (a
    provisioner killed between writing and starting must converge)."""
    ran = state is not None and (state.active_state == "failed" or state.exec_main_start_usec > 0)
    if entry.cause == "ended" and ran and not new_generation:
        ended = entry.reason.removeprefix("start: unchanged but ")
        return entry.model_copy(update={"action": "keep", "cause": "held",
                                        "reason": f"keep: {ended}; post the desired set to retry"})
    return entry
