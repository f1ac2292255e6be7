# SPDX-License-Identifier: AGPL-3.0-or-later
"""A blocking, thread-safe systemd client over D-Bus (jeepney's threading router).

One connection per process: `SystemdClient.shared()` hands every caller the same one. Jobs are awaited
on systemd's JobRemoved signal, with the match added and Subscribe() called before any job is queued,
so no completion can be missed and nothing polls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from queue import Empty, Queue
from queue import Full as QueueFull
from typing import Any, ClassVar, TypeVar

from jeepney import HeaderFields, Message, MessageType
from jeepney.bus_messages import message_bus
from jeepney.io.common import RouterClosed
from jeepney.io.threading import DBusRouter, Proxy, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from ozwald.systemd import protocol
from ozwald.systemd.errors import BusUnavailable, JobFailed, SystemdError, WaitTimeout, error_for

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_CALL_TIMEOUT = 30.0
SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"


def system_bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT


@dataclass(frozen=True)
class JobOutcome:
    """How one queued job ended. `error` is set when systemd refused to queue it at all."""

    unit: str
    operation: str
    result: str
    seconds: float
    error: SystemdError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.result == "done"

    def raise_for_result(self) -> None:
        if self.error is not None:
            raise self.error
        if self.result != "done":
            raise JobFailed(self.unit, self.operation, self.result)


class _Router(DBusRouter):  # type: ignore[misc]
    """jeepney's router, made safe for a connection shared by many threads.

    - jeepney's dispatch iterates the filter dict while other threads add and remove filters (every job
      wait adds one), and a reply can time out between its lookup and its delivery: either raised in the
      receiver thread and ended it, and with it the connection, for good. Here dispatch works on a
      snapshot, and no single message can end the receiver.
    - A lost connection is expected (systemd restarts, a test host halts): no traceback; callers see
      BusUnavailable on their next call.
    """

    def _receiver(self) -> None:
        try:
            super()._receiver()
        except OSError:
            self._replies.drop_all()

    def _dispatch(self, msg: Message) -> None:
        try:
            if self._replies.dispatch(msg):
                return
            for handle in list(self._filters.filters.values()):  # a copy: other threads change the dict
                if handle.rule.matches(msg):
                    with contextlib.suppress(QueueFull):
                        handle.queue.put_nowait(msg)
        except Exception:  # one message must never end the receiver (and so the connection)
            log.exception("dropped a D-Bus message that could not be dispatched")


class _EventSink:
    """Stands where jeepney's router puts matching messages (a queue's put_nowait) and hands them on as
    typed events, so no raw message leaves this module through `watch`."""

    def __init__(self, deliver: Callable[[protocol.SystemdEvent], None]) -> None:
        self._deliver = deliver

    def put_nowait(self, message: Message) -> None:
        event = protocol.event_from_signal(message)
        if event is not None:
            self._deliver(event)


def _unit_state(unit: str, props: dict[str, Any]) -> protocol.UnitState:
    """A unit's state from GetAll over every interface: the Service properties count only for a loaded
    service, as when they were read from the Service interface alone."""
    service = unit.endswith(".service") and props.get("LoadState") == "loaded"
    return protocol.unit_state(unit, props, props if service else {})


def _body(unit: str, body: tuple[Any, ...]) -> tuple[Any, ...]:
    return body


def _release(catcher: contextlib.AbstractContextManager[Future[Message]]) -> None:
    """Stop waiting for a reply. A router that dropped every waiter (the bus was lost) has forgotten it."""
    with contextlib.suppress(KeyError):
        catcher.__exit__(None, None, None)


class SystemdClient:
    _shared: ClassVar[dict[str, SystemdClient]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()
    calls: int = 0  # method calls sent, for the benchmarks' per-pass counts (not exact across threads)

    def __init__(self, address: str | None = None, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.address = address or system_bus_address()
        self.call_timeout = call_timeout
        try:
            self._connection = open_dbus_connection(bus=self.address)
        except (OSError, TimeoutError) as exc:
            raise BusUnavailable(f"cannot connect to the system bus at {self.address}: {exc}") from None
        self._router = _Router(self._connection)
        bus = Proxy(message_bus, self._router, timeout=call_timeout)
        bus.AddMatch(protocol.job_removed_rule(with_sender=True))
        bus.AddMatch(protocol.unit_changes_rule(with_sender=True))
        self._call(protocol.subscribe())

    @classmethod
    def shared(cls, address: str | None = None) -> SystemdClient:
        """The process-wide client for `address` (default: $DBUS_SYSTEM_BUS_ADDRESS or the system bus)."""
        key = address or system_bus_address()
        with cls._shared_lock:
            client = cls._shared.get(key)
            if client is None or not client.alive:
                client = cls(key)
                cls._shared[key] = client
            return client

    @property
    def alive(self) -> bool:
        # jeepney exposes no public liveness check; its receiver thread ends when the connection drops.
        return bool(self._router._rcv_thread.is_alive())

    def close(self) -> None:
        self._router.close()
        self._connection.close()

    def __enter__(self) -> SystemdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Calls -----------------------------------------------------------------------------------------

    def _call(self, message: Message, unit: str | None = None) -> tuple[Any, ...]:
        self.calls += 1
        with self._translated_errors(unit):
            reply = self._router.send_and_get_reply(message, timeout=self.call_timeout)
            body: tuple[Any, ...] = unwrap_msg(reply)
            return body

    def _call_pipelined(self, calls: Sequence[tuple[Message, str]],
                        convert: Callable[[str, tuple[Any, ...]], T]) -> list[T]:
        """Send every call before awaiting any reply: N calls cost one round trip, not N.

        Raises the error of the first call (in order) that failed, as `_call` would have.
        """
        out: list[T] = []
        for result in self._call_each(calls, convert):
            if isinstance(result, SystemdError):
                raise result
            out.append(result)
        return out

    def _call_each(self, calls: Sequence[tuple[Message, str]],
                   convert: Callable[[str, tuple[Any, ...]], T]) -> list[T | SystemdError]:
        """Pipelined like `_call_pipelined`, but per call its converted reply body or the SystemdError it got
        (a refusal or no reply in time), so one refused unit does not hide the others' outcomes. A lost bus
        raises.

        Each reply is converted and let go as soon as it is taken: 100 parsed GetAll replies (~300 properties
        each) held at once were the high-water mark of the process's memory with 100 instances.
        """
        if not calls:
            return []
        if not self._router._rcv_thread.is_alive():
            raise BusUnavailable("system bus connection lost: the D-Bus router has stopped")
        self.calls += len(calls)
        deadline = time.monotonic() + self.call_timeout
        waiting: list[tuple[contextlib.AbstractContextManager[Future[Message]], Future[Message]] | None] = []
        try:
            for message, unit in calls:
                with self._translated_errors(unit):
                    serial = next(self._connection.outgoing_serial)
                    catcher = self._router._replies.catch(serial, Future())
                    waiting.append((catcher, catcher.__enter__()))
                    self._router.send(message, serial=serial)
            results: list[T | SystemdError] = []
            for index, (_, unit) in enumerate(calls):
                entry = waiting[index]
                assert entry is not None
                waiting[index] = None
                try:
                    with self._translated_errors(unit):
                        reply = entry[1].result(timeout=max(0.0, deadline - time.monotonic()))
                        results.append(convert(unit, unwrap_msg(reply)))
                except SystemdError as exc:
                    results.append(exc)
                finally:
                    _release(entry[0])
                    del entry
            return results
        finally:
            for left in waiting:
                if left is not None:
                    _release(left[0])

    @contextmanager
    def _translated_errors(self, unit: str | None) -> Iterator[None]:
        """jeepney's and the socket's exceptions as Ozwald's systemd errors."""
        try:
            yield
        except DBusErrorResponse as exc:
            text = str(exc.data[0]) if exc.data else exc.name
            raise error_for(unit, exc.name, text) from None
        except (TimeoutError, FutureTimeout):
            raise SystemdError(unit, "ozwald.Timeout", f"no reply from systemd in {self.call_timeout:g} s") from None
        except (OSError, RouterClosed) as exc:
            raise BusUnavailable(f"system bus connection lost: {exc}") from None

    def reload(self) -> None:
        """Re-run generators (Quadlet) and reload unit files; returns once systemd has finished."""
        self._call(protocol.reload())

    def reset_failed(self, unit: str) -> None:
        self._call(protocol.reset_failed_unit(unit), unit)

    def reset_failed_units(self, units: Sequence[str]) -> dict[str, SystemdError]:
        """ResetFailedUnit for many units, pipelined; the units systemd refused (e.g. not loaded), with why."""
        results = self._call_each([(protocol.reset_failed_unit(unit), unit) for unit in units], _body)
        return {unit: result for unit, result in zip(units, results, strict=True) if isinstance(result, SystemdError)}

    def list_units(self, pattern: str = "ozwald-*") -> list[protocol.UnitState]:
        """Loaded units matching `pattern`, with their service state (result, restarts, exit status).

        1 + N calls, the N pipelined: ListUnitsByPatterns, then one GetAll per unit, all sent at once.
        """
        listed = protocol.parse_list_units(self._call(protocol.list_units_by_patterns([pattern])))
        return self.unit_states([row.name for row in listed])

    def unit_states(self, units: Sequence[str]) -> list[protocol.UnitState]:
        """`unit_state` of many units: one GetAll each, all pipelined (one round trip, however many)."""
        return self._call_pipelined([(protocol.get_all_properties(unit, protocol.ALL_IFACES), unit) for unit in units],
                                    lambda unit, body: _unit_state(unit, protocol.unwrap_properties(body)))

    def unit_state(self, unit: str) -> protocol.UnitState:
        """systemd loads the unit on demand if needed; an unknown unit has load_state 'not-found'."""
        return _unit_state(unit, protocol.unwrap_properties(
            self._call(protocol.get_all_properties(unit, protocol.ALL_IFACES), unit)))

    # Jobs ------------------------------------------------------------------------------------------

    def start(self, units: Sequence[str], timeout: float | None = None) -> dict[str, JobOutcome]:
        """Start units in parallel and wait for every job to end."""
        return self._jobs("start", units, protocol.start_unit, timeout)

    def stop(self, units: Sequence[str], timeout: float | None = None) -> dict[str, JobOutcome]:
        return self._jobs("stop", units, protocol.stop_unit, timeout)

    def restart(self, units: Sequence[str], timeout: float | None = None) -> dict[str, JobOutcome]:
        return self._jobs("restart", units, protocol.restart_unit, timeout)

    def enqueue(self, operation: str, units: Sequence[str]) -> dict[str, str | SystemdError]:
        """Queue start/stop/restart jobs without waiting: unit → job path, or the error that refused it.

        For callers that follow progress through unit-state signals instead of blocking on jobs.

        One call after another, each reply awaited, as systemctl does; not pipelined. With 100 StopUnit calls
        sent at once, systemd began 100 jobs in the same instant, and for health-checked containers every
        `podman rm` (ExecStop) then hung until TimeoutStopSec: 100 stops took 75-116 s in six runs, against
        19-21 s for the same units stopped one call after another (bench/trace_stop.py, bench/README.md).
        """
        build = {"start": protocol.start_unit, "stop": protocol.stop_unit, "restart": protocol.restart_unit}[operation]
        results: dict[str, str | SystemdError] = {}
        for unit in units:
            try:
                (job_path,) = self._call(build(unit), unit)
                results[unit] = str(job_path)
            except SystemdError as exc:  # refused (or no reply in time): the others are still queued
                results[unit] = exc
        return results

    def start_unit(self, unit: str, timeout: float | None = None) -> JobOutcome:
        """Start one unit; raise JobFailed unless its job ends `done`."""
        outcome = self.start([unit], timeout)[unit]
        outcome.raise_for_result()
        return outcome

    def stop_unit(self, unit: str, timeout: float | None = None) -> JobOutcome:
        outcome = self.stop([unit], timeout)[unit]
        outcome.raise_for_result()
        return outcome

    def restart_unit(self, unit: str, timeout: float | None = None) -> JobOutcome:
        outcome = self.restart([unit], timeout)[unit]
        outcome.raise_for_result()
        return outcome

    def _jobs(self, operation: str, units: Sequence[str], build: Any, timeout: float | None
              ) -> dict[str, JobOutcome]:
        outcomes: dict[str, JobOutcome] = {}
        pending: dict[str, tuple[str, float]] = {}
        removed: Queue[Message] = Queue()
        # The filter exists before any job is queued: a job that ends at once is still seen.
        with self._router.filter(protocol.job_removed_rule(with_sender=False), queue=removed):
            for unit in units:
                started = time.monotonic()
                try:
                    (job_path,) = self._call(build(unit), unit)
                except SystemdError as exc:
                    outcomes[unit] = JobOutcome(unit, operation, "error", 0.0, exc)
                    continue
                pending[str(job_path)] = (unit, started)
            deadline = None if timeout is None else time.monotonic() + timeout
            while pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    message = removed.get(timeout=remaining)
                except Empty:
                    names = ", ".join(sorted(unit for unit, _ in pending.values()))
                    raise WaitTimeout(f"{operation} jobs still running after {timeout:g} s: {names}") from None
                if message.header.message_type is not MessageType.signal:
                    continue
                event = protocol.parse_job_removed(message.body)
                if event.job_path in pending:
                    unit, started = pending.pop(event.job_path)
                    outcomes[unit] = JobOutcome(unit, operation, event.result, time.monotonic() - started)
        return outcomes

    # Watching --------------------------------------------------------------------------------------

    def wait_for(self, unit: str, predicate: Callable[[protocol.UnitState], bool], timeout: float
                 ) -> protocol.UnitState:
        """Wait until `predicate(state)` holds, re-reading the unit only when systemd signals a change."""
        path = protocol.unit_object_path(unit)
        deadline = time.monotonic() + timeout
        with self._unit_changes() as changes:
            while True:
                state = self.unit_state(unit)
                if predicate(state):
                    return state
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeout(f"{unit}: still {state.active_state}/{state.sub_state} after {timeout:g} s")
                    try:
                        message = changes.get(timeout=remaining)
                    except Empty:
                        continue
                    if message.header.fields.get(HeaderFields.path) == path:
                        break

    @contextmanager
    def watch(self, deliver: Callable[[protocol.SystemdEvent], None]) -> Iterator[None]:
        """Hand every JobRemoved and unit change to `deliver`, typed, for as long as the context is open.

        `deliver` runs on the bus's receiver thread: it must only hand the event on (put it on a queue).
        """
        sink = _EventSink(deliver)
        with self._router.filter(protocol.job_removed_rule(with_sender=False), queue=sink), \
                self._router.filter(protocol.unit_changes_rule(with_sender=False), queue=sink):
            yield

    @contextmanager
    def _unit_changes(self) -> Iterator[Queue[Message]]:
        """PropertiesChanged signals for units, raw, for wait_for's own use (others get typed events)."""
        changes: Queue[Message] = Queue()
        with self._router.filter(protocol.unit_changes_rule(with_sender=False), queue=changes):
            yield changes
