# SPDX-License-Identifier: AGPL-3.0-or-later
"""The reconciler's decisions, with no I/O: events in, commands out, all state in one object.

A driver (`reconciler.py` on a real host, the simulated host in the tests) feeds it what happened (desired
set, settings, systemd's signals, the results of its commands, the clock) and executes what it answers. It
decides from its inputs alone, so every rule can be driven through thousands of random steps in seconds
(tests/reconcile/test_machine.py). An instance whose spec cannot be resolved or rendered is failed with the
reason and its unit stopped; the others converge.
"""

from __future__ import annotations

from collections.abc import Sequence

from ozwald.provisioner import reconcile_messages as m
from ozwald.provisioner import reconcile_on_demand as od
from ozwald.provisioner import reconcile_swap as sw
from ozwald.provisioner import status as st
from ozwald.provisioner.events import DesiredChanged
from ozwald.provisioner.plan import Target, hold_failed, plan, spec_of, stale, started_from
from ozwald.quadlet.naming import instance_of_unit, proxy_name, socket_name, unit_name
from ozwald.quadlet.on_demand import knock_address
from ozwald.quadlet.stored import StoredUnit
from ozwald.records import ActiveService, DesiredInstance, DesiredSet
from ozwald.systemd.protocol import JobRemoved, UnitChanged, UnitState

HEARTBEAT_S = 1.0  # statuses are published at least this often, and the driver turns at least this often
BUSY_UNIT_READ_S = 0.5  # a unit with a job queued is re-read at most this often (crash-loop progress)
RETRY_FAILED_PASS_S = 2.0
WAKE_GRACE_S = 5.0  # a knock whose container did not move by then is not shown as starting any longer
DOWN = ("inactive", "failed")


def _instance_of(unit: str) -> str:
    return instance_of_unit(unit) or unit


class ReconcilerCore:
    def __init__(self, resync_interval: float = 60.0) -> None:
        self.resync_interval = resync_interval
        self.desired = DesiredSet()
        self.outcomes: dict[str, m.Outcome] = {}
        self.wanted: set[str] = set()  # instances whose unit should run: the ones the settings can render
        self.on_demand: dict[str, m.Rendered] = {}  # the wanted instances that run on demand
        self.waking: dict[str, float] = {}  # on-demand instances knocked on: starting until their container moves
        self.states: dict[str, UnitState] = {}
        self.files: dict[str, StoredUnit] = {}
        self.replaced: dict[str, st.RunningSpec] = {}  # spec a running unit still runs after its file was rewritten
        self.jobs: dict[str, tuple[str, str]] = {}  # job path → (unit, operation)
        self.decided: dict[str, str] = {}  # unit → job decided but not queued yet (shown as pending)
        self.refused: dict[str, str] = {}  # instance → why systemd refused its job
        self.failures: dict[str, tuple[int, str]] = {}  # instance → (state change µs, explained reason)
        self.container_ids: dict[str, tuple[str, str]] = {}  # instance → (invocation, container id)
        self.dirty: set[str] = set()  # units that signalled: worth reading again
        self.stopped: set[str] = set()  # units whose stop job ended: their files go if nobody wants them
        self.gone: set[str] = set()  # unwanted units whose stop ended "done": their signals are not news
        self.waiting: set[str] = set()  # instances whose start waits for stops to end
        self.stopped_by_us: set[str] = set()  # instances Ozwald stopped: down on purpose, not held as failed
        self.swap = sw.SwapArbiter()  # starts of on-demand instances held at their gates
        self.last_read: dict[str, float] = {}
        self.reload_owed = False
        self.news = True  # something a status is composed from changed since the last publish
        self.need_pass = True
        self.first_pass_done = False
        self.published_at = float("-inf")
        self.published: list[ActiveService] | None = None
        self.next_resync = 0.0
        self.retry_at: float | None = None
        self.applied_generation: int | None = None
        self._applied_before: int | None = None
        self.wanted_generation = 0
        self.passes = 0
        self.unit_reads = 0
        self.last_report: m.PassReport | None = None

    # Events ----------------------------------------------------------------------------------------------
    def handle(self, event: m.Event, now: float) -> list[m.Command]:
        """Fold one event into the state; the commands it calls for at once (a pass for a Snapshot)."""
        if isinstance(event, DesiredChanged):
            if event.generation is None or event.generation > self.wanted_generation:
                self.need_pass = True
                self.wanted_generation = max(self.wanted_generation, event.generation or 0)
        elif isinstance(event, m.Snapshot):
            return self._pass(event, now)
        elif isinstance(event, UnitChanged):
            leaving = {u for u, op in self.jobs.values() if op == "stop" and _instance_of(u) not in self.wanted}
            # Units being stopped that nobody wants: their stop job's end is the news, not the changes on
            # the way (each read is ~300 properties, and 100 leaving units make thousands of signals).
            if instance_of_unit(event.unit) is not None and event.unit not in self.gone | leaving:
                self.dirty.add(event.unit)
        elif isinstance(event, JobRemoved):
            self._job_removed(event)
        elif isinstance(event, m.Queued):
            self._queued(event)
        elif isinstance(event, m.UnitsRead):
            self._units_read(event.states, now)
        elif isinstance(event, m.FilesRead):
            self.files = dict(event.files)
        elif isinstance(event, m.Nudge):
            return self._nudge(event, now)
        elif isinstance(event, m.GateClosed | m.ConnectionsCounted):
            self.swap.handle(event, now)
        else:
            self.failures[event.name] = (event.state_change_usec, event.reason)
            self.news = True
        return []

    def _job_removed(self, event: JobRemoved) -> None:
        job = self.jobs.pop(event.job_path, None)
        if job is None:
            return
        unit, operation = job
        self.news = True
        if operation == "stop":
            self.stopped.add(unit)
            # Wanted again while it stopped (a reload took its spec away and gave it back): start it now.
            self.need_pass = self.need_pass or _instance_of(unit) in self.wanted
            if event.result == "done" and _instance_of(unit) not in self.wanted:
                # Down (a stop job ends "done" only once its unit is inactive or failed) and unwanted: it
                # leaves the statuses now; reading it would only say so, seconds later on a busy systemd.
                self.states.pop(unit, None)
                self.dirty.discard(unit)
                self.gone.add(unit)
                return
        self.dirty.add(unit)
        self.last_read.pop(unit, None)  # the end of a job is news: read at once

    def _nudge(self, event: m.Nudge, now: float) -> list[m.Command]:
        """Wake: knock on the socket, as a client would (an operator's wake also clears a start limit the
        container hit). Sleep: stop the container, which takes the proxy with it; the socket keeps listening."""
        outcome = self.on_demand.get(event.name)
        if outcome is None or outcome.unit.on_demand is None or event.name in self.waiting:
            return []
        sock = self.states.get(socket_name(event.name))
        if event.operation == "wake" and (sock is None or sock.active_state != "active"):
            return []  # not listening: a knock would wake whatever else holds the port (its status says why)
        self.news = True
        # What systemd signalled and is not read yet is read before these publishes: they are out of turn, and a
        # unit that crashed meanwhile must not be published as available.
        news: list[m.Command] = [m.ReadUnits(tuple(sorted(self.dirty)))] if self.dirty else []
        self.dirty.clear()
        if event.operation == "wake":
            # Published as starting before the knock: the container starts before systemd's signal is heard.
            host, port = knock_address(outcome.unit.on_demand.public)
            self.waking[event.name] = now
            return [*news, m.ResetFailed((unit_name(event.name),)), m.Publish(), m.Knock(event.name, host, port),
                    m.Publish()]
        if unit_name(event.name) in self._busy():
            return news
        self.decided[unit_name(event.name)] = "stop"
        return [*news, m.Publish(), m.Enqueue("stop", (unit_name(event.name),))]

    def _wanted_units(self) -> set[str]:
        return {unit_name(n) for n in self.wanted} | {u for n in self.on_demand for u in od.units_of(n)}

    def _primary(self, name: str) -> str:
        return od.primary(name, self.on_demand)

    def _queued(self, event: m.Queued) -> None:
        busy = {unit: path for path, (unit, _) in self.jobs.items()}
        for unit in (*event.jobs, *event.refused):
            self.decided.pop(unit, None)
            if unit in busy:  # a new job replaced the one queued before (job mode "replace")
                self.jobs.pop(busy[unit], None)
        for unit, path in event.jobs.items():
            self.jobs[path] = (unit, event.operation)
        for unit, message in event.refused.items():
            self.refused[_instance_of(unit)] = f"systemd refused to {event.operation} {unit}: {message}"
            if self.last_report is not None:
                self.last_report.errors[_instance_of(unit)] = message
        self.news = True

    def _units_read(self, states: Sequence[UnitState], now: float) -> None:
        busy, wanted = self._busy(), self._wanted_units()
        primary = {self._primary(name) for name in self.wanted}
        self.news = self.news or bool(states)
        for state in states:
            name = _instance_of(state.name)
            if name in self.waking and state.name == unit_name(name) and state.active_state != "inactive":
                del self.waking[name]  # its container moved: the states tell (decide() expires a knock unheard)
            self.unit_reads += 1
            self.last_read[state.name] = now
            if state.load_state == "loaded":
                self.states[state.name] = state
            else:
                self.states.pop(state.name, None)
            if state.name not in wanted | busy and state.active_state in ("active", "activating"):
                self.need_pass = True  # an Ozwald unit nobody wants came up: a pass stops it
            if state.name in primary - busy and _instance_of(state.name) in self.stopped_by_us \
                    and state.active_state in DOWN:
                self.need_pass = True  # stopped on purpose and wanted again: a pass starts it
            if state.name in primary - busy and _instance_of(state.name) in self.on_demand \
                    and state.active_state in DOWN and self.first_pass_done:
                # A socket must never stay down while its instance is desired; one that fails at once (its port
                # taken) is retried at the pace of a failed pass, not in a loop.
                retry = now + RETRY_FAILED_PASS_S
                self.retry_at = retry if self.retry_at is None else min(self.retry_at, retry)

    def pass_failed(self, now: float) -> None:
        """A step of the turn failed (systemd or the disk): what was decided but not queued is not under way,
        and the pass is retried."""
        self.need_pass, self.retry_at, self.news = False, now + RETRY_FAILED_PASS_S, True
        self.next_resync = max(self.next_resync, self.retry_at)  # else a due resync is retried at once, forever
        self.decided, self.applied_generation = {}, self._applied_before

    # What to do now --------------------------------------------------------------------------------------
    def _busy(self) -> set[str]:  # units with a job queued, or decided and about to be
        return {unit for unit, _ in self.jobs.values()} | set(self.decided)

    def stopping(self) -> bool:
        return any(op == "stop" for _, op in self.jobs.values()) or "stop" in self.decided.values()

    def wait_seconds(self, now: float) -> float:
        swap = self.swap.due()
        due = min(self.next_resync, self.retry_at if self.retry_at is not None else self.next_resync,
                  *([swap] if swap is not None else []))
        wait = min(HEARTBEAT_S, max(0.0, due - now))
        return min(wait, BUSY_UNIT_READ_S) if self.dirty else wait

    def decide(self, now: float) -> list[m.Command]:
        """The next step of a turn; the driver executes it and asks again until the answer is empty."""
        busy = self._busy()
        going = sorted(u for u in self.stopped if _instance_of(u) not in self.wanted and u not in busy)
        self.stopped.clear()
        if going:
            # A stop can end failed (killed after its timeout): reset, so the unit unloads cleanly.
            self.news = True
            for unit in going:
                name = _instance_of(unit)
                self.reload_owed = self.files.pop(name, None) is not None or self.reload_owed
                self.replaced.pop(name, None)
            return [m.ResetFailed(tuple(going)), *(m.Remove(n) for n in dict.fromkeys(map(_instance_of, going)))]
        due = now >= self.next_resync or (self.retry_at is not None and now >= self.retry_at)
        if self.need_pass or due or (self.waiting and not self.stopping()):
            self.need_pass = False
            return [m.ReadHost()]
        ready = sorted(u for u in self.dirty
                       if u not in busy or now - self.last_read.get(u, float("-inf")) >= BUSY_UNIT_READ_S)
        if ready:
            self.dirty -= set(ready)
            return [m.ReadUnits(tuple(ready))]
        if self.news or now - self.published_at >= HEARTBEAT_S:
            self.news, self.published_at = False, now
            return [m.Publish()]
        for name in [n for n, at in self.waking.items() if now - at > WAKE_GRACE_S or n not in self.on_demand]:
            del self.waking[name]
            self.news = True
        stray = od.stray_proxies(self.on_demand, self.states, busy)
        if stray:
            self.decided.update({unit: "stop" for unit in stray})
            return [m.Enqueue("stop", stray)]
        swap = self.swap.decide({n: o.exclusive_with for n, o in self.on_demand.items()}, self.on_demand,
                                self.states, busy, now)
        if swap.news:
            self.news = True
        if swap.stop:
            self.decided.update({unit: "stop" for unit in swap.stop})
        if swap.commands:
            return list(swap.commands)
        if self.reload_owed and not self.stopping():
            # Files of stopped units are removed at once; the reload waits for the last stop to end.
            self.reload_owed = False
            return [m.Reload()]
        return []

    # One pass --------------------------------------------------------------------------------------------
    def _pass(self, snap: m.Snapshot, now: float) -> list[m.Command]:
        self.next_resync, self.retry_at, self.need_pass = now + self.resync_interval, None, False
        self.waiting.clear()
        desired = snap.desired
        self.wanted_generation = max(self.wanted_generation, desired.generation)
        rendered = {o.instance.name: o for o in snap.outcomes if isinstance(o, m.Rendered)}
        on_demand = {name: o for name, o in rendered.items() if o.on_demand}
        targets = [Target(o.instance, o.unit.spec_hash, o.unit.text) for o in rendered.values()]
        files, states = dict(snap.files), dict(snap.states)
        self.dirty -= set(states)
        self.gone.clear()  # what this pass read is the truth again, gone or not
        self.last_read.update((unit, now) for unit in states)
        self._applied_before = self.applied_generation
        new_generation = self.applied_generation is not None and desired.generation != self.applied_generation
        busy = self._busy()
        # A stop under way that this process did not queue (its predecessor's, killed meanwhile): on purpose too.
        self.stopped_by_us |= {_instance_of(u) for u, unit_state in states.items()
                               if unit_state.active_state == "deactivating" and unit_state.job_type and u not in busy}
        plan_states = od.plan_states(states, on_demand)
        # Down on purpose (Ozwald stopped it), or found inactive by a new process that cannot tell why: started
        # again; only what systemd gave up on (failed), or saw end by itself, is held until a re-post. A socket
        # is never held: it must listen while its instance is desired.
        entries = [hold_failed(e, (s := plan_states.get(unit_name(e.name))),
                               new_generation or e.name in self.stopped_by_us or e.name in on_demand
                               or (self.applied_generation is None and s is not None and s.active_state == "inactive"))
                   for e in plan(snap.settings, targets, files, plan_states, stale(files, states))]
        report = self.last_report = m.PassReport(generation=desired.generation, entries=entries)
        self.passes += 1
        self.states, self.files, self.desired = states, files, desired
        self.outcomes = {o.instance.name: o for o in snap.outcomes}
        self.wanted = set(rendered)
        self.on_demand = on_demand
        # Ozwald stops what the settings cannot render: started again once they can, even by a process that did
        # not see it stop (else it would be held as if it had ended by itself).
        self.stopped_by_us |= {o.instance.name for o in snap.outcomes if isinstance(o, m.Unresolved)}
        for table in (self.refused, self.failures, self.container_ids):
            for name in [n for n in table if n not in self.outcomes]:
                del table[name]
        act: dict[str, list[str]] = {"start": [], "stop": [], "restart": [], "keep": []}
        for entry in entries:
            act[entry.action].append(entry.name)
        deliberate = act["start"] + act["restart"]
        self.first_pass_done = True
        busy = self._busy()

        def up(unit: str) -> bool:
            return unit not in busy and (s := states.get(unit)) is not None and s.active_state not in DOWN

        # Units to stop first: all of an instance nobody wants, and those in the way of a start or a change.
        to_stop = [u for n in act["stop"] for u in od.units_of(n) if up(u)]
        starting = {unit for unit, op in [*self.jobs.values(), *self.decided.items()] if op != "stop"}
        ahead = {n: [u for u in od.stop_before_change(n, on_demand, n in act["restart"]) if up(u) or u in starting]
                 for n in deliberate}
        to_stop += [u for units in ahead.values() for u in units]
        down = [n for n in act["stop"] if not any(u in busy or u in to_stop for u in od.units_of(n))]
        self.decided.update({unit: "stop" for unit in to_stop})
        self.stopped_by_us |= {_instance_of(u) for u in to_stop if _instance_of(u) not in deliberate}
        self.decided.update({self._primary(n): op for op in ("start", "restart") for n in act[op] if not ahead[n]})
        # Publish before the first job is queued: 100 jobs queued one call after another take seconds, and the
        # units go down meanwhile; `available` from before must not outlive that.
        commands: list[m.Command] = [m.Publish()] if to_stop or act["restart"] else []
        commands.append(m.Enqueue("stop", tuple(to_stop)))
        failed = tuple(u for n in down for u in od.units_of(n) if (s := states.get(u)) is not None and s.failed)
        changed = self.reload_owed or any(n in self.files for n in down)
        commands += [m.ResetFailed(failed), *(m.Remove(n) for n in down)]
        for name in down:
            self.files.pop(name, None)
        self.reload_owed = False
        if deliberate and self.stopping():
            # What a stop frees (host ports, GPU memory, the container name) is free only once it ended: the
            # starts wait, and the generation is applied by the pass that follows the stops.
            self.waiting = set(deliberate)
            for name in deliberate:
                self.decided.pop(self._primary(name), None)
            report.reloaded = changed
            return [*commands, *([m.Reload()] if changed else []), m.Publish()]
        self.stopped_by_us -= set(deliberate)  # started now, not while stops end: a later pass must still start them
        for name, new in rendered.items():
            old = files.get(name)
            gate = new.unit.swap_gate.text if new.unit.swap_gate is not None else None
            rewrite = old is not None and old.swap_gate != gate  # a swap group changed: nothing restarts for it
            if name in deliberate:
                state = states.get(unit_name(name))
                if old is not None and old.text != new.unit.text and state is not None \
                        and state.active_state in st.RUNNING_STATES and started_from(old, state):
                    self.replaced[name] = spec_of(old)  # it keeps running the old spec until restarted
                rewrite = rewrite or old is None or old.text != new.unit.text or old.persistent != new.persistent
                self.refused.pop(name, None)
                self.failures.pop(name, None)
            if rewrite:
                commands.append(m.Write(new.unit, new.persistent))
                changed = True
        report.reloaded = changed
        commands += [m.ReadFiles(), m.Reload()] if changed else []
        # Ozwald's own starts must never count towards the crash-loop limit: only systemd's restarts do. An
        # on-demand container's failure is kept (its socket may be restarted by a retry) until a new post or a
        # change of its spec (a crash loop of the old spec must not refuse the first start of the new one, also
        # when a restarted provisioner applies the change).
        resets = [self._primary(n) for n in deliberate]
        resets += [unit_name(n) for n in deliberate if n in on_demand and (new_generation or n in act["restart"])]
        commands.append(m.ResetFailed(tuple(resets)))
        commands += [m.Enqueue(op, tuple(self._primary(n) for n in act[op])) for op in ("start", "restart")]
        self.applied_generation = desired.generation
        return [*commands, m.Publish()]

    # Statuses --------------------------------------------------------------------------------------------
    def _running(self, name: str, state: UnitState | None) -> st.RunningSpec | None:
        if state is None or state.active_state not in st.RUNNING_STATES:
            self.replaced.pop(name, None)
            return None
        stored = self.files.get(name)
        if stored is not None and (started_from(stored, state) or not state.exec_main_start_usec):
            self.replaced.pop(name, None)
            return spec_of(stored)
        return self.replaced.get(name)

    def _observe(self, instance: DesiredInstance, target_hash: str | None, jobs: list[str]) -> st.Observed:
        state = self.states.get(unit_name(instance.name))
        if instance.name in self.waiting:
            jobs = [*jobs, "start once the stops end"]
        if instance.name in self.swap.waiting:
            jobs = [*jobs, self.swap.waiting[instance.name]]
        observed = st.Observed(state=state, running=self._running(instance.name, state),
                               job=jobs[-1] if jobs else None, refused=self.refused.get(instance.name))
        status = st.status_of(observed, target_hash)
        if status == "failed" and state is not None:
            known = self.failures.get(instance.name)
            reason = known[1] if known is not None and known[0] == state.state_change_usec else None
            return st.Observed(state=state, running=observed.running, job=observed.job, refused=observed.refused,
                            failure=reason)
        known_id = self.container_ids.get(instance.name)
        if status == "available" and state is not None and known_id is not None \
                and known_id[0] == state.invocation_id:
            return st.Observed(state=state, running=observed.running, container_id=known_id[1])
        return observed

    def compose(self) -> list[ActiveService]:
        jobs_by_unit: dict[str, list[str]] = {}
        for unit, operation in [*self.jobs.values(), *self.decided.items()]:
            if unit == proxy_name(_instance_of(unit)):
                continue  # Ozwald only stops proxies (after their container failed): the container's state tells
            jobs_by_unit.setdefault(unit, []).append(operation)
        for name in self.waking:
            jobs_by_unit.setdefault(unit_name(name), []).append("wake")
        generation, services = self.desired.generation, []
        for instance in self.desired.instances:
            outcome, unit = self.outcomes.get(instance.name), unit_name(instance.name)
            if isinstance(outcome, m.Resource):
                services.append(st.describe_resource(instance, outcome.kind, generation))
            elif isinstance(outcome, m.Unresolved):
                services.append(st.describe_unresolved(instance, outcome.reason, self.states.get(unit), generation,
                                                    unit))
            else:
                target = outcome.unit.spec_hash if outcome is not None else None
                observed = self._observe(instance, target, jobs_by_unit.get(unit, []))
                if outcome is not None and outcome.on_demand:
                    socket = od.socket_observed(instance.name, outcome, self.states,
                                                jobs_by_unit.get(socket_name(instance.name), []))
                    services.append(st.describe_on_demand(instance, target, observed, socket, generation, unit))
                else:
                    services.append(st.describe(instance, target, observed, generation, unit))
        leaving: dict[str, UnitState] = {}
        for unit, state in sorted(self.states.items()):
            name = _instance_of(unit)
            if name in self.outcomes or state.active_state in DOWN:
                continue
            if name not in leaving or unit == unit_name(name):  # one entry per instance: its container's if up
                leaving[name] = state
        for name, state in sorted(leaving.items()):
            stored = self.files.get(name)
            services.append(st.describe_leaving(name, state, spec_of(stored) if stored else None, generation))
        return services

    def unexplained(self) -> list[tuple[m.Rendered, UnitState]]:
        """Failed units whose reason is not known for their current state: the driver explains them (journal,
        Podman) before it publishes."""
        busy, found = self._busy(), []
        for name, outcome in self.outcomes.items():
            state = self.states.get(unit_name(name))
            if isinstance(outcome, m.Rendered) and state is not None and name not in self.refused \
                    and unit_name(name) not in busy and name not in self.waiting \
                    and st.status_of(st.Observed(state=state), outcome.unit.spec_hash) == "failed" \
                    and (not outcome.on_demand or state.active_state == "failed") \
                    and self.failures.get(name, (None,))[0] != state.state_change_usec:
                found.append((outcome, state))
        return found

    def publication(self) -> list[ActiveService] | None:
        """The statuses to publish, or None when they did not change since the last publish."""
        services = self.compose()
        if services == self.published:
            return None
        self.published = services
        return services
