# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the HTTP layer needs from the provisioner core, and the errors the core may raise to it.

The API never touches Redis, systemd or the settings itself: every endpoint calls one method of a
`ProvisionerCore`. Each method returns JSON-ready data (or the shared records of
`ozwald.records`), is called from several server threads at once, and should answer fast:
`watch_active` in particular sits on the hot path that orchestrators poll.

Errors: every error of Ozwald declares the status and `{"detail": ...}` it is answered with
(`ozwald.errors.OzwaldError`); the API reads that in one place (`ozwald.api.app.error_answer`). Anything
else becomes a logged 500 `{"detail": "internal error"}`. The ones a core raises on purpose:

- `ozwald.records.UpdateError` -> 400 `{"detail": {"index", "field", "message"}}`;
- `ozwald.records.AdmissionError` -> 409 `{"detail": ...}` (the request is valid but cannot be admitted now);
- `ozwald.provisioner.wake.NotDesired` -> 404, `NotOnDemand` and `NotListening` -> 409 (a wake or sleep of an
  instance that is not desired, or not on demand; a wake of one whose socket does not listen);
- `ozwald.state.QueueFull` -> 429 `{"detail": ...}` with Retry-After (the profiling queue is full);
- `ozwald.records.CoreUnavailable` -> 503 `{"detail": ...}` (a dependency such as the cache is down).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ozwald.records import (
    ActiveService,
    AdmissionError,
    CoreUnavailable,
    DesiredSet,
    NudgeAccepted,
    PlanEntry,
    ServiceRequest,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["AdmissionError", "CoreUnavailable", "ProvisionerCore"]  # the errors live in ozwald.records


@runtime_checkable
class ProvisionerCore(Protocol):
    """The provisioner as the HTTP API sees it. Implementations must be thread-safe."""

    def configured_services(self) -> list[dict[str, Any]]:
        """GET /srv/services/configured/: the settings' service definitions as JSON-ready dicts.

        Secrets (passwords, secret env values) must already be masked.
        """
        ...

    def watch_active(self, after: int | None, wait: float) -> tuple[int, list[ActiveService]]:
        """GET /srv/services/active/[?after=R&wait=S]: every instance that is active or in transition, with
        the revision of these statuses, a number that grows with every change. When `after` is the current
        revision, block up to `wait` seconds for a change; otherwise answer at once. The API calls this in
        slices of at most a second, and with `after=None, wait=0` for a plain GET.

        Return the same list object for as long as the statuses are unchanged (and never mutate it): the
        API serializes a list once and serves those bytes again while it gets the same object back."""
        ...

    def update(self, items: list[ServiceRequest], force: bool = False) -> DesiredSet:
        """POST /srv/services/active/update/: replace the desired set, all or nothing.

        `items` are already validated one by one and have unique names. Raises UpdateError when an
        item names an unknown service, variety or profile (index = the item's position), and
        AdmissionError when the set cannot be admitted; `force` asks to admit it anyway where the
        core allows that. Returns the stored set; its `generation` is reported to the caller.
        """
        ...

    def wake(self, name: str) -> NudgeAccepted:
        """POST /srv/services/active/<name>/wake: start the container of a desired on-demand instance now; it
        then idles out after `idle_stop` like after a connection. Answers at once (the API waits, with
        `?wait=`, by watching the statuses). Raises an error answered 404 when `name` is not in the desired set,
        409 when it is not on demand, or (a wake) when its socket does not listen (ozwald.provisioner.wake)."""
        ...

    def sleep(self, name: str) -> NudgeAccepted:
        """POST /srv/services/active/<name>/sleep: stop the container of a desired on-demand instance now; its
        socket keeps listening. Raises like `wake`."""
        ...

    def plan(self, items: list[ServiceRequest]) -> list[PlanEntry]:
        """POST /srv/services/active/plan/: what `update(items)` would do, applying nothing.

        Raises UpdateError like `update`.
        """
        ...

    def host_resources(self) -> dict[str, Any]:
        """GET /srv/host/resources: `ozwald.resources.host_resources_view` of a fresh snapshot."""
        ...

    def available_resources(self) -> list[dict[str, Any]]:
        """GET /srv/resources/available/: `ozwald.resources.available_resources_view` of a snapshot."""
        ...

    def profile_requests(self) -> list[dict[str, Any]]:
        """GET /srv/services/profile: the pending and running profiling requests, oldest first, with
        position, state and progress."""
        ...

    def watch_profile(self, after: int | None, wait: float) -> tuple[int, list[dict[str, Any]]]:
        """GET /srv/services/profile?after=R&wait=S: the queue as `profile_requests` answers it, with a revision
        that grows with every change of the queue or the results (a finished item leaves the queue after its
        result is recorded). Blocks like `watch_active`."""
        ...

    def profile_results(self) -> list[dict[str, Any]]:
        """GET /srv/services/profile/results: every profiling result, newest first, each with `stale`."""
        ...

    def enqueue_profile(self, body: Any) -> dict[str, Any]:
        """POST /srv/services/profile: queue a profiling request; `body` is the parsed JSON as sent:
        `{service, variety?, profile?}`, `{"services": [{name, variety?, profile?}, ...]}` or `{"all": true}`.

        The run waits in the queue until the system is unloaded; it is never refused for load. Raises
        UpdateError when the body is not a valid request, QueueFull when the queue already holds its
        maximum. Returns what to answer, e.g. `{"status": "accepted", "request_id": "...", "items": [...]}`.
        """
        ...

    def metrics(self) -> Iterable[Metric]:
        """GET /metrics: the provisioner's metric families (`ozwald.provisioner.metrics`), read at scrape time
        from what the core holds; the API adds its own request counts and the process's numbers."""
        ...

    def health(self) -> dict[str, str]:
        """GET /health: component name -> "ok", or a short reason it is not (no secrets, no hosts).

        The API answers 200 `{"status": "healthy"}` when every value is "ok", else 503 with the map.
        """
        ...
