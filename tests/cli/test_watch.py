# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald list_active_services --watch` against the real API server in front of a fake core: a frame per
change, drawn as the blocking query returns, with each GPU's memory; Ctrl-C ends it with status 0."""

from __future__ import annotations

import io
import json
import threading

import pytest

from ozwald import cli
from ozwald.api import ApiServer
from ozwald.cli import watch as cli_watch
from ozwald.client import OzwaldClient
from tests.api.conftest import API_KEY
from tests.cli.conftest import SettlingCore


class FrameLog(io.StringIO):
    """What the watch writes, with an event per frame written."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[str] = []
        self.written = threading.Condition()

    def write(self, text: str) -> int:
        with self.written:
            self.frames.append(text)
            self.written.notify_all()
        return super().write(text)

    def wait_frames(self, count: int, timeout: float = 10) -> None:
        with self.written:
            assert self.written.wait_for(lambda: len(self.frames) >= count, timeout), self.frames


def test_a_change_is_drawn_at_once_with_the_gpu_memory(served: ApiServer, core: SettlingCore) -> None:
    client = OzwaldClient(f"http://127.0.0.1:{served.port}", API_KEY)
    log = FrameLog()
    done: list[int] = []
    # wait=30: the second frame can only come from the change, not from the blocking query's timeout
    thread = threading.Thread(target=lambda: done.append(cli_watch.watch(client, out=log, wait=30, frames=2)))
    thread.start()
    log.wait_frames(1)
    assert "(no active services)" in log.frames[0]
    assert "nvidia:0  NVIDIA RTX 4090  4576 of 24576 MiB in use or reserved (20000 available)" in log.frames[0]
    client.update([{"name": "llm", "service": "qwen1.5-vllm", "variety": "cpu-only"}, {"name": "broken"}])
    thread.join(10)
    assert done == [0]
    second = log.frames[1]
    assert second.startswith("\n2 instances at ")
    lines = second.splitlines()
    assert any(line.split()[:3] == ["llm", "available", "qwen1.5-vllm"] for line in lines), second
    assert any(line.split()[:2] == ["broken", "failed"] and "image localhost/nope:latest not found" in line
               for line in lines), second


def test_json_frames_are_one_document_per_line(served: ApiServer, core: SettlingCore) -> None:
    client = OzwaldClient(f"http://127.0.0.1:{served.port}", API_KEY)
    log = FrameLog()
    thread = threading.Thread(target=cli_watch.watch, args=(client,),
                              kwargs={"as_json": True, "out": log, "wait": 30, "frames": 2})
    thread.start()
    log.wait_frames(1)
    client.update([{"name": "a", "service": "qwen1.5-vllm"}])
    thread.join(10)
    first, second = (json.loads(line) for line in log.getvalue().splitlines())
    assert first["services"] == [] and second["revision"] > first["revision"]
    assert [s["name"] for s in second["services"]] == ["a"] and second["gpus"][0]["id"] == "nvidia:0"


def test_the_cli_option_and_ctrl_c(served: ApiServer, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    real_frame = cli_watch.frame
    calls: list[int] = []

    def frame_then_interrupt(*args: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as Ctrl-C while waiting for the next change
        return real_frame(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_watch, "frame", frame_then_interrupt)
    monkeypatch.setattr(cli_watch, "WAIT_S", 0.2)  # the second frame comes from the query's timeout
    assert cli.main(["list_active_services", "--watch"]) == cli.EXIT_OK
    assert "(no active services)" in capsys.readouterr().out
