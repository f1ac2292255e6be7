# SPDX-License-Identifier: AGPL-3.0-or-later
"""The error model: every error class of Ozwald declares its exit status and its HTTP answer, and the
one mapping on each side (`ozwald.cli.common.failure`, `ozwald.api.app.error_answer`) gives exactly that."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest

import ozwald
from ozwald.api.app import error_answer
from ozwald.cli.common import failure
from ozwald.errors import INTERNAL_ERROR, Exit, OzwaldError


def _every_error_class() -> dict[str, type[BaseException]]:
    for module in pkgutil.walk_packages(ozwald.__path__, "ozwald."):
        if not module.name.endswith("__main__"):  # running it would run the command
            importlib.import_module(module.name)
    found: dict[str, type[BaseException]] = {}
    todo: list[type[BaseException]] = [BaseException]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("ozwald."):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


# Each error class: (exit status, HTTP status, a factory for an instance). A new error class must be added
# here: the test below fails until someone decides what the command line and the API make of it.
EXPECTED: dict[str, tuple[Exit, int, Callable[[type[Any]], BaseException]]] = {
    "ozwald.errors.OzwaldError": (Exit.BUG, 500, lambda c: c("x")),
    "ozwald.config.errors.ConfigError": (Exit.USAGE, 500, lambda c: c([])),
    "ozwald.config.errors.ResolveError": (Exit.USAGE, 400, lambda c: c("variety", "no variety 'tpu'")),
    "ozwald.records.UpdateError": (Exit.USAGE, 400, lambda c: c(0, "name", "bad")),
    "ozwald.records.AdmissionError": (Exit.USAGE, 409, lambda c: c({"resource": "vram", "message": "full"})),
    "ozwald.records.CoreUnavailable": (Exit.UNREACHABLE, 503, lambda c: c("cache unavailable")),
    "ozwald.quadlet.render.RenderError": (Exit.USAGE, 400, lambda c: c("HealthCmd needs Podman 4.6")),
    "ozwald.systemd.errors.SystemdError": (Exit.FAILED, 500, lambda c: c("u", "org.x.Failed", "no")),
    "ozwald.systemd.errors.UnitNotFound": (Exit.USAGE, 500, lambda c: c("u", "org.x.NoSuchUnit", "no")),
    "ozwald.systemd.errors.AccessDenied": (Exit.USAGE, 500, lambda c: c("u", "org.x.AccessDenied", "no")),
    "ozwald.systemd.errors.BusUnavailable": (Exit.UNREACHABLE, 503, lambda c: c("no bus")),
    "ozwald.systemd.errors.JobFailed": (Exit.FAILED, 500, lambda c: c("u", "start", "failed")),
    "ozwald.systemd.errors.WaitTimeout": (Exit.TIMEOUT, 504, lambda c: c("u: still activating after 5 s")),
    "ozwald.podman.inspector.PodmanUnavailable": (Exit.UNREACHABLE, 503, lambda c: c("no socket")),
    "ozwald.podman.inspector._ApiError": (Exit.BUG, 500, lambda c: c(418, "teapot")),
    "ozwald.resources.backend.Unavailable": (Exit.UNREACHABLE, 503, lambda c: c("no driver")),
    "ozwald.provisioner.profiler.Preempted": (Exit.BUG, 500, lambda c: c()),
    "ozwald.provisioner.wake.NotDesired": (Exit.USAGE, 404, lambda c: c("no instance 'x' in the desired set")),
    "ozwald.provisioner.wake.NotOnDemand": (Exit.USAGE, 409, lambda c: c("instance 'x' is not on demand")),
    "ozwald.provisioner.wake.NotListening": (Exit.USAGE, 409, lambda c: c("cannot wake x: its socket is failed")),
    "ozwald.state.errors.StateError": (Exit.FAILED, 500, lambda c: c("x")),
    "ozwald.state.errors.StateUnavailable": (Exit.UNREACHABLE, 503, lambda c: c("down", "unix:/run/x")),
    "ozwald.state.errors.StateCorrupt": (Exit.FAILED, 500, lambda c: c("bad", "key")),
    "ozwald.state.errors.QueueFull": (Exit.USAGE, 429, lambda c: c("8 profiling requests are pending")),
    "ozwald.state.errors.IdentityError": (Exit.USAGE, 500, lambda c: c("which provisioner?")),
    "ozwald.state.resp.RedisError": (Exit.FAILED, 500, lambda c: c("x")),
    "ozwald.state.resp.ConnectionFailed": (Exit.UNREACHABLE, 503, lambda c: c("reset")),
    "ozwald.state.resp.Timeout": (Exit.UNREACHABLE, 503, lambda c: c("timed out")),
    "ozwald.state.resp.Refused": (Exit.UNREACHABLE, 503, lambda c: c("bad db")),
    "ozwald.state.resp.AuthenticationFailed": (Exit.UNREACHABLE, 503, lambda c: c("WRONGPASS")),
    "ozwald.state.resp.ProtocolError": (Exit.UNREACHABLE, 503, lambda c: c("not RESP")),
    "ozwald.state.resp.ReplyError": (Exit.FAILED, 500, lambda c: c("ERR x")),
    "ozwald.state.resp.ServerNotReady": (Exit.UNREACHABLE, 503, lambda c: c("LOADING")),
    "ozwald.api.auth.ApiKeyError": (Exit.USAGE, 500, lambda c: c("OZWALD_SYSTEM_KEY is not set")),
    "ozwald.api.parse.ApiError": (Exit.USAGE, 422, lambda c: c(422, {"field": "wait"})),
    "ozwald.client.OzwaldClientError": (Exit.FAILED, 500, lambda c: c("x")),
    "ozwald.client.OzwaldAPIError": (Exit.UNREACHABLE, 503, lambda c: c(503, "cache unavailable")),
    "ozwald.client.OzwaldConnectionError": (Exit.UNREACHABLE, 503, lambda c: c("cannot reach")),
    "ozwald.client.OzwaldTimeout": (Exit.TIMEOUT, 504, lambda c: c("not within 5 s")),
    "ozwald.cli.common.UsageError": (Exit.USAGE, 400, lambda c: c("bad")),
    "ozwald.cli.common.Unreachable": (Exit.UNREACHABLE, 503, lambda c: c("journalctl: not found")),
}

CLASSES = _every_error_class()


def test_every_error_class_of_ozwald_is_in_the_model_and_the_table() -> None:
    assert sorted(name for name, cls in CLASSES.items() if not issubclass(cls, OzwaldError)) == []
    assert sorted(CLASSES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_side_maps_an_error_to_what_it_declares(name: str) -> None:
    exit_status, http_status, make = EXPECTED[name]
    exc = make(CLASSES[name])
    assert isinstance(exc, OzwaldError)
    code, lines = failure(exc)
    assert code == exit_status
    assert lines == exc.cli_lines()
    status, body, headers = error_answer(exc)
    assert status == http_status
    detail = json.loads(body)
    assert list(detail) == ["detail"]
    if status == 500:  # the message is for the log: the caller learns nothing of the internals
        assert detail["detail"] == INTERNAL_ERROR
    if status == 429:
        assert int(headers["Retry-After"]) > 0


@pytest.mark.parametrize(("status", "exit_status"), [(400, Exit.USAGE), (404, Exit.USAGE), (409, Exit.USAGE),
                                                     (429, Exit.USAGE), (500, Exit.FAILED), (503, Exit.UNREACHABLE)])
def test_an_api_answer_exits_by_its_status(status: int, exit_status: Exit) -> None:
    from ozwald.client import OzwaldAPIError

    code, lines = failure(OzwaldAPIError(status, {"field": "x"}))
    assert code == exit_status
    assert lines == [f'the API answered {status}: {{"field": "x"}}']


def test_anything_else_is_a_bug_exit_70() -> None:
    for unexpected in (ValueError("invalid literal"), KeyError("generation"), RuntimeError("boom")):
        code, lines = failure(unexpected)
        assert code == Exit.BUG
        assert int(code) == 70
        assert lines[0].startswith(f"a bug in Ozwald: {type(unexpected).__name__}")
