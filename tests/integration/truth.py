# SPDX-License-Identifier: AGPL-3.0-or-later
"""The truth monitor: while a scenario runs, compare every `available` the API says with what really runs.

Each sample reads reality (the environment the container answering on the instance's port really has),
then GET /srv/services/active/, then reality again. An `available` instance must be matched by reality
before or after the read: a container answering on its port whose environment is exactly that of the
reported service/variety/profile (every environment key any variety or profile of the service sets).
Anything else is a violation, kept with the timeline around it. Instances that publish no port cannot
be checked this way: scenarios that use them assert on their statuses instead (`statuses_seen`).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ozwald.config import Settings, resolve

Reality = dict[str, Any] | None  # the env the container on the port answers with; None: nothing answers


def expected_env(settings: Settings, service: str, variety: str | None, profile: str | None) -> dict[str, str | None]:
    """The reported spec's value of every env key the service sets anywhere (None: must be absent)."""
    definition = settings.service(service)
    assert definition is not None, service
    keys: set[str] = set()
    varieties: list[str | None] = [*definition.varieties] or [None]
    profiles: list[str | None] = [None, *definition.profiles]
    for v in varieties:
        for p in profiles:
            keys |= set(resolve(settings, service, v, p).env)
    env = resolve(settings, service, variety, profile).env
    return {key: env.get(key) for key in keys}


def read_env(url: str, timeout: float = 0.5) -> Reality:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
            return body if isinstance(body, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


@dataclass
class Violation:
    at: float
    instance: str
    said: dict[str, Any]
    before: Reality
    after: Reality

    def __str__(self) -> str:
        return (f"t={self.at:.3f}s {self.instance}: API said {self.said['status']} "
                f"{self.said.get('variety')}/{self.said.get('profile')} but the container answered "
                f"{_short(self.before)} before and {_short(self.after)} after")


def _short(env: Reality) -> str:
    if env is None:
        return "nothing"
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(env.items()) if k.isupper() and k not in ("PATH", "HOME",
                                                                                                 "HOSTNAME", "TERM",
                                                                                                 "container")) + "}"


@dataclass
class TruthMonitor:
    """Samples in a thread until stopped; `violations` and `checked` say how it went."""

    settings: Settings
    get_active: Callable[[], list[dict[str, Any]]]
    env_urls: Mapping[str, str]  # instance → URL of its container's /env, for instances that publish a port
    interval: float = 0.005
    checked: int = 0
    samples: int = 0
    unanswered: int = 0
    violations: list[Violation] = field(default_factory=list)
    timeline: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    statuses_seen: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="truth-monitor", daemon=True)
        self._t0 = time.monotonic()
        self._errors: list[BaseException] = []

    def __enter__(self) -> TruthMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _reality(self) -> dict[str, Reality]:
        return {name: read_env(url) for name, url in self.env_urls.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # a bug in the check itself: fails assert_truthful
                self._errors.append(exc)
            self._stop.wait(self.interval)

    def sample(self) -> None:
        before = self._reality()
        try:
            said = self.get_active()
        except (OSError, AssertionError):  # the API down (a provisioner being restarted) says nothing
            self.unanswered += 1
            return
        after = self._reality()
        now = time.monotonic() - self._t0
        self.samples += 1
        row = {}
        for item in said:
            name = item["name"]
            row[name] = f"{item['status']} {item.get('variety')}/{item.get('profile')}"
            seen = self.statuses_seen.setdefault(name, [])
            if not seen or seen[-1] != item["status"]:
                seen.append(item["status"])
            if item["status"] != "available" or name not in self.env_urls:
                continue
            self.checked += 1
            want = expected_env(self.settings, item["service"], item.get("variety"), item.get("profile"))
            if not (_matches(before.get(name), want) or _matches(after.get(name), want)):
                self.violations.append(Violation(now, name, item, before.get(name), after.get(name)))
        if not self.timeline or self.timeline[-1][1] != row:
            self.timeline.append((now, row))

    def report(self) -> str:
        lines = [f"{self.samples} samples, {self.checked} available observations checked, "
                 f"{len(self.violations)} violations, {self.unanswered} unanswered GETs, "
                 f"{len(self._errors)} checker errors {self._errors[:1]!r}"]
        lines += [str(v) for v in self.violations[:10]]
        lines += [f"  {t:8.3f} {row}" for t, row in self.timeline[-40:]]
        return "\n".join(lines)

    def assert_truthful(self, min_checked: int = 1) -> None:
        assert not self.violations and not self._errors, self.report()
        assert self.checked >= min_checked, self.report()


def _matches(env: Reality, want: Mapping[str, str | None]) -> bool:
    return env is not None and all(env.get(key) == value for key, value in want.items())
