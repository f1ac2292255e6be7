# SPDX-License-Identifier: AGPL-3.0-or-later
from pathlib import Path

from ozwald.config import parse_settings
from ozwald.doctor import check_cdi, check_podman, check_quadlet_dirs
from ozwald.resources.cdi import cdi_device_names

SETTINGS = parse_settings("""\
services:
  - name: llm
    image: x
    varieties:
      nvidia: {}
      pinned: {devices: ["nvidia.com/gpu=0"]}
      amdgpu: {}
      cpu-only: {}
""")

NVIDIA_SPEC = """\
cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}
  - name: all
    containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}
"""


def test_podman_versions() -> None:
    assert check_podman(None).level == "fail"
    assert check_podman((4, 3)).level == "fail"
    old = check_podman((4, 9))
    assert old.level == "warn" and "Entrypoint" in old.message and "Notify=healthy" in old.message
    assert check_podman((5, 4)).level == "ok"


def test_cdi_names_resolve_against_the_specs(tmp_path: Path) -> None:
    (tmp_path / "nvidia.yaml").write_text(NVIDIA_SPEC)
    (tmp_path / "broken.yaml").write_text("kind: [unterminated")
    assert cdi_device_names([tmp_path])[0] == {"nvidia.com/gpu=0", "nvidia.com/gpu=all"}
    findings = {(f.level, f.message.split(" ")[0]) for f in check_cdi(SETTINGS, [tmp_path])}
    assert ("ok", "nvidia.com/gpu=all") in findings and ("ok", "nvidia.com/gpu=0") in findings
    assert ("warn", "amd.com/gpu=all") in findings
    assert any(level == "fail" and word == "unreadable" for level, word in findings)


def test_missing_nvidia_spec_names_the_fix(tmp_path: Path) -> None:
    findings = [f for f in check_cdi(SETTINGS, [tmp_path]) if f.message.startswith("nvidia.com/gpu=all")]
    assert findings[0].level == "warn"
    assert findings[0].fix == "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"


def test_quadlet_directories(tmp_path: Path) -> None:
    assert [f.level for f in check_quadlet_dirs([tmp_path / "a" / "b"])] == ["ok"]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    import os

    expected = "ok" if os.geteuid() == 0 else "fail"  # root may write anywhere
    assert [f.level for f in check_quadlet_dirs([locked / "x"])] == [expected]


ON_DEMAND = parse_settings("""\
services:
  - name: chat
    image: x
    ports: ['18080:8000']
    on_demand: {idle_stop: 5m}
    profiles:
      always-on: {on_demand: false}
  - name: embed
    image: y
    ports: ['18081:8000']
    varieties:
      cpu: {}
      gpu: {on_demand: true}
  - name: plain
    image: z
""")


def test_socket_proxyd_is_needed_only_by_on_demand_services(tmp_path: Path) -> None:
    from ozwald.doctor import check_socket_proxyd

    absent = tmp_path / "systemd-socket-proxyd"
    finding = check_socket_proxyd(ON_DEMAND, absent)
    assert finding.level == "warn" and finding.check == "socket-proxyd"
    assert finding.message == (f"{absent} is missing or not executable: the on-demand services chat, embed/gpu "
                               "cannot be served (their sockets start no proxy)")
    assert "systemd" in finding.fix
    assert check_socket_proxyd(SETTINGS, absent).level == "ok"  # nothing runs on demand: not needed
    absent.write_text("#!/bin/sh\n")
    absent.chmod(0o644)
    assert check_socket_proxyd(ON_DEMAND, absent).level == "warn"  # there, but it cannot run
    absent.chmod(0o755)
    present = check_socket_proxyd(ON_DEMAND, absent)
    assert present.level == "ok" and present.message == f"{absent} is present (on demand: chat, embed/gpu)"
