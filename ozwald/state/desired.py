# SPDX-License-Identifier: AGPL-3.0-or-later
"""The desired set: what the orchestrator asked this provisioner to run.

Redis holds the live copy, so that the API process and the reconciler (possibly separate processes)
share it and so that a change wakes the reconciler at once through pub/sub. A local JSON file holds the
durable copy, because the provisioner's Redis runs without persistence: when Redis comes back empty,
`read()` restores the set from the file instead of reporting "nothing desired", which would stop every
service on the host.

Generations order the sets. A Lua script assigns them, so concurrent writers (several API workers, the
CLI) never lose an update and never share a number; the script also takes the file's generation as a
floor, so a writer that finds Redis empty continues the sequence instead of restarting it at 1. The
file is written under a lock and only when the new generation is higher than the one on disk, so racing
writers can finish in any order and the file still ends on the newest set.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pydantic

from ozwald.records import DesiredInstance, DesiredSet, check_unique_names
from ozwald.state.durable import write_if_newer
from ozwald.state.errors import StateCorrupt, StateError, StateUnavailable, describe_validation_error
from ozwald.state.keys import DEFAULT_PREFIX, Keyspace
from ozwald.state.redis_conn import CONNECT_TIMEOUT, LuaScript, endpoint_of, redis_errors
from ozwald.state.resp import Client, PubSub, RedisError

log = logging.getLogger(__name__)

DesiredListener = Callable[[DesiredSet], None]

# KEYS: desired document, generation counter. ARGV: the set as a JSON object *without* its generation,
# the floor (the local file's generation), the change channel. The generation is spliced in as the
# first member rather than decoded and re-encoded with cjson, which would turn an empty `instances`
# array into an object and rewrite escapes.
_REPLACE = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local floor = tonumber(ARGV[2])
if floor > current then current = floor end
local generation = string.format('%d', current + 1)
redis.call('SET', KEYS[1], '{"generation":' .. generation .. ',' .. string.sub(ARGV[1], 2))
redis.call('SET', KEYS[2], generation)
redis.call('PUBLISH', ARGV[3], generation)
return generation
"""

# KEYS: desired document, generation counter. ARGV: the file's document, its generation, the change
# channel. Writes only if Redis has no document or an older generation, so a restore that races a
# replace can never roll it back. Returns the document Redis holds afterwards.
_RESTORE = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local existing = redis.call('GET', KEYS[1])
local generation = tonumber(ARGV[2])
if existing and current >= generation then
  return existing
end
redis.call('SET', KEYS[1], ARGV[1])
if generation > current then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return ARGV[1]
"""


class DesiredStateStore:
    """The desired set of one provisioner, in Redis and in `state_dir/desired-<provisioner>.json`.

    Safe to share between threads. `namespace` is the provisioner's name.
    """

    def __init__(self, redis: Client, namespace: str, state_dir: Path | str, *,
                 prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.keys = Keyspace(namespace, prefix)
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / f"desired-{namespace}.json"
        self._lock_path = self.state_dir / f".desired-{namespace}.json.lock"
        self._replace = LuaScript(redis, _REPLACE)
        self._restore = LuaScript(redis, _RESTORE)
        self._listeners: list[DesiredListener] = []
        self._listeners_lock = threading.Lock()

    @property
    def provisioner(self) -> str:
        return self.keys.provisioner

    @property
    def channel(self) -> str:
        """The pub/sub channel that carries each new generation number."""
        return self.keys.desired_changed

    # -- Redis ---------------------------------------------------------------------------------------

    def generation(self) -> int:
        """The newest generation Redis knows, 0 if none: cheap, for "has anything changed?" checks."""
        with redis_errors(self.redis, "reading the desired generation"):
            raw = self.redis.get(self.keys.generation)
        return _as_int(raw, f"Redis key {self.keys.generation}")

    def read(self) -> DesiredSet:
        """The current desired set (generation 0 and empty when nothing was ever set).

        When the local file is newer than Redis (Redis restarted empty, or lost writes), Redis is
        restored from it first; when Redis is newer (written by another process or host), the file is
        brought up to date, so it stays a durable copy of what this host last saw.
        """
        key = self.keys.desired
        with redis_errors(self.redis, "reading the desired set"):
            raw = self.redis.get(key)
        current = _parse(raw, f"Redis key {key}") if raw is not None else None
        try:
            local = self.read_local()
        except StateError as exc:
            if current is None:
                raise  # no good copy anywhere: refuse rather than report an empty set
            log.warning("%s; rewriting it from Redis (generation %d)", exc, current.generation)
            local = None
        if local is not None and local.generation > (current.generation if current else 0):
            return self._restore_from(local)
        if current is not None:
            if local is None or current.generation > local.generation:
                self._save_quietly(current)
            return current
        return DesiredSet()

    def replace(self, instances: Sequence[DesiredInstance]) -> DesiredSet:
        """Make `instances` the whole desired set, with the next generation; return the stored set.

        On return the set is in Redis, announced on `channel`, and on disk (fsynced) unless a racing
        writer already put a newer generation there. If only the file write fails, the set is already
        live in Redis; the StateError raised says so. A timeout retried by the client can skip a
        generation number; numbers stay unique and increasing.
        """
        items = tuple(instances)
        check_unique_names(items)
        draft = DesiredSet(instances=items, updated_at=datetime.now(UTC))
        body = draft.model_dump_json(exclude={"generation"})
        if not (body.startswith("{") and len(body) > 2):
            raise AssertionError(f"unexpected desired-set JSON: {body[:40]!r}")  # the splice needs an object
        with redis_errors(self.redis, "replacing the desired set"):
            generation = int(self._replace([self.keys.desired, self.keys.generation],
                                           [body, self._floor(), self.channel]))
        desired = draft.model_copy(update={"generation": generation})
        self._notify(desired)  # the set is live in Redis: waking the reconciler need not wait for the fsync
        try:
            self.save_local(desired)
        except OSError as exc:
            raise StateError(f"desired generation {generation} is live in Redis but was not saved to "
                             f"{self.path}: {exc}") from exc
        return desired

    def _restore_from(self, local: DesiredSet) -> DesiredSet:
        with redis_errors(self.redis, "restoring the desired set from the local file"):
            raw = self._restore([self.keys.desired, self.keys.generation],
                                [local.model_dump_json(), local.generation, self.channel])
        restored = _parse(str(raw), f"Redis key {self.keys.desired}")
        if restored.generation == local.generation:
            log.info("restored desired generation %d of %r from %s into Redis at %s", local.generation,
                     self.provisioner, self.path, endpoint_of(self.redis))
        elif restored.generation > local.generation:
            self._save_quietly(restored)
        return restored

    # -- local file ----------------------------------------------------------------------------------

    def read_local(self) -> DesiredSet | None:
        """The durable copy, or None if there is none. For a reconciler that must run while Redis is down."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        return _parse(text, str(self.path))

    def save_local(self, desired: DesiredSet) -> bool:
        """Write `desired` to the file unless the file already has this generation or a newer one.

        True if written. The compare and the write happen under a lock, so concurrent writers finishing
        out of order cannot move the file back to an older generation.
        """
        local = self.read_local
        return write_if_newer(self.path, self._lock_path, desired.model_dump_json(indent=2) + "\n",
                              desired.generation, lambda: (d.generation if (d := local()) is not None else None),
                              "generation")

    def _save_quietly(self, desired: DesiredSet) -> None:
        try:
            self.save_local(desired)
        except OSError as exc:
            log.warning("cannot save desired generation %d to %s: %s", desired.generation, self.path, exc)

    def _floor(self) -> int:
        try:
            local = self.read_local()
        except StateError:
            return 0  # a damaged file holds no generation worth continuing; save_local replaces it
        return local.generation if local is not None else 0

    # -- change notification -------------------------------------------------------------------------

    def add_listener(self, callback: DesiredListener) -> Callable[[], None]:
        """Call `callback(desired)` after each successful replace() in this process; returns a remover.

        Runs in the replacing thread, so it must be quick; an exception is logged, never raised into
        the caller whose update has already been committed.
        """
        with self._listeners_lock:
            self._listeners.append(callback)

        def remove() -> None:
            with self._listeners_lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return remove

    def _notify(self, desired: DesiredSet) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(desired)
            except Exception:
                log.exception("desired-state listener %r failed on generation %d", callback, desired.generation)

    def subscribe(self, *, poll_interval: float = 0.5, resync_interval: float = 30.0) -> ChangeListener:
        """A listener that wakes on every new generation, from any process; see ChangeListener.

        Subscribe *before* the first read(): a change made in between is then seen twice (harmless)
        rather than never.
        """
        return ChangeListener(self, poll_interval=poll_interval, resync_interval=resync_interval)


class ChangeListener:
    """Wakes a waiting thread as soon as a new desired generation exists.

    A background thread holds a pub/sub subscription. Pub/sub drops messages while disconnected, so on
    every (re)subscription, and every `resync_interval` seconds, the thread also reads the generation
    counter: a change made while the subscription was down is noticed at reconnection, not lost.
    Changes made through the same store object arrive directly, without the Redis round trip.
    """

    def __init__(self, store: DesiredStateStore, *, poll_interval: float = 0.5, resync_interval: float = 30.0) -> None:
        self._store = store
        self._redis = store.redis
        self._poll = poll_interval
        self._resync_interval = resync_interval
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._latest = 0
        self._returned = 0
        self._connected = False
        pubsub = self._open()  # in the caller's thread: a dead Redis is reported now, as StateUnavailable
        self._returned = self._latest  # wait() reports changes after this point only
        self._remove_hook = store.add_listener(lambda desired: self._offer(desired.generation))
        self._thread = threading.Thread(target=self._run, args=(pubsub,), daemon=True,
                                        name=f"ozwald-desired-{store.provisioner}")
        self._thread.start()

    @property
    def generation(self) -> int:
        """The newest generation seen so far."""
        with self._cond:
            return self._latest

    @property
    def connected(self) -> bool:
        """Whether the subscription is up; while it is down, wait() only returns on its timeout."""
        return self._connected

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until a generation newer than the last one returned exists; return it.

        Returns None on timeout or when the listener is closed. Several changes in a row come back as
        one wake-up with the newest generation: the reconciler only ever needs the latest set.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed.is_set() or self._latest > self._returned, timeout)
            if self._latest > self._returned:
                self._returned = self._latest
                return self._returned
            return None

    def close(self) -> None:
        """Stop the thread and drop the subscription; a blocked wait() returns None."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._remove_hook()
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=self._poll + CONNECT_TIMEOUT + 1.0)

    def __enter__(self) -> ChangeListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _offer(self, generation: int) -> None:
        with self._cond:
            if generation > self._latest:
                self._latest = generation
                self._cond.notify_all()

    def _resync(self) -> None:
        self._offer(self._store.generation())

    def _open(self) -> PubSub:
        pubsub = self._redis.pubsub()
        try:
            with redis_errors(self._redis, "subscribing to desired-state changes"):
                pubsub.subscribe(self._store.channel)
                deadline = time.monotonic() + 2 * CONNECT_TIMEOUT
                while True:
                    message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                    if message is not None and message.kind == "subscribe":
                        break
                    if message is not None and message.kind == "message":
                        self._handle(message.data)
                    elif time.monotonic() >= deadline:
                        endpoint = endpoint_of(self._redis)
                        raise StateUnavailable(f"Redis at {endpoint} did not confirm the subscription", endpoint)
            self._resync()
        except BaseException:
            _close_quietly(pubsub)
            raise
        self._connected = True
        return pubsub

    def _run(self, pubsub: PubSub | None) -> None:
        backoff = _BACKOFF_MIN
        last_sync = time.monotonic()
        while not self._closed.is_set():
            try:
                if pubsub is None:
                    pubsub = self._open()
                    log.info("desired-state subscription for %r restored", self._store.provisioner)
                    backoff = _BACKOFF_MIN
                    last_sync = time.monotonic()
                with redis_errors(self._redis, "listening for desired-state changes"):
                    message = pubsub.get_message(timeout=self._poll)
                if message is None:
                    if time.monotonic() - last_sync >= self._resync_interval:
                        self._resync()
                        last_sync = time.monotonic()
                elif message.kind == "message":
                    self._handle(message.data)
            except Exception as exc:
                if self._closed.is_set():
                    break
                if not isinstance(exc, StateError | OSError):
                    # A bug must not end the thread: the reconciler would never be woken again.
                    log.exception("desired-state listener for %r failed; resubscribing", self._store.provisioner)
                elif self._connected:
                    log.warning("desired-state subscription for %r lost: %s; reconnecting",
                                self._store.provisioner, exc)
                self._connected = False
                if pubsub is not None:
                    _close_quietly(pubsub)
                    pubsub = None
                self._closed.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        self._connected = False
        if pubsub is not None:
            _close_quietly(pubsub)

    def _handle(self, data: object) -> None:
        try:
            generation = int(str(data))
        except ValueError:
            log.debug("ignoring non-numeric message %r on %s", data, self._store.channel)
            return
        self._offer(generation)


_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0


def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        pubsub.close()


def _parse(text: str, where: str) -> DesiredSet:
    try:
        return DesiredSet.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise StateCorrupt(f"the desired set in {where} is damaged: {describe_validation_error(exc)}", where) from None


def _as_int(raw: object, where: str) -> int:
    if raw is None:
        return 0
    try:
        return int(str(raw))
    except ValueError:
        raise StateCorrupt(f"{where} holds {str(raw)[:40]!r}, not a generation number", where) from None
