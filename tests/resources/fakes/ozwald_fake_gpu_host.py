# SPDX-License-Identifier: AGPL-3.0-or-later
"""A stand-in NVIDIA host for tools/gpu-check: NVML, `nvidia-smi` and a GPU memory allocator that agree.

They share one JSON state file (its path in $OZWALD_FAKE_GPU_HOST), so that the check, which runs them as
separate processes, sees one consistent machine:

    {"driver_version": "550.54.15",
     "gpus": [{"name": ..., "uuid": ..., "bus_id": "00000000:18:00.0", "total_mib": 143771, "used_mib": 0}],
     "reserved_mib": 0,       # counted as used by NVML's v1 memory info (Ozwald's), not by nvidia-smi
     "context_mib": 500,      # what an allocation costs on top of its bytes (the CUDA context)
     "per_process": true,     # whether NVML reports each process's memory (else None: the device delta)
     "smi": {"0": {"uuid": "GPU-…"}},   # nvidia-smi answers that differ from NVML's (a mismatch to find)
     "allocations": [{"pid": 123, "gpu": 0, "mib": 8692}]}   # written by the allocator while it holds

- `StateNvml(path).module()` is a `pynvml` module (the stand-in of ozwald_fake_pynvml) that re-reads the
  allocations on every device query;
- `smi_main(argv)` answers `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` as the real one does;
- `python ozwald_fake_gpu_host.py allocate BYTES` registers an allocation, says `ready PID`, and removes it
  when its stdin closes (the protocol of tools/gpu-check's `--allocator`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ozwald_fake_pynvml import FakeNvidiaGpu, FakeNvml, MiB

STATE_ENV = "OZWALD_FAKE_GPU_HOST"


def read_state(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically, so a reader in another process never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def used_mib(state: dict[str, Any], index: int) -> int:
    """NVML's v1 `used`: the GPU's own use, the allocations on it and the driver's reserved memory."""
    gpu = state["gpus"][index]
    held = sum(a["mib"] for a in state.get("allocations", []) if a["gpu"] == index)
    return int(gpu["used_mib"] + held + state.get("reserved_mib", 0))


class StateNvml(FakeNvml):
    """The stand-in NVML, its GPUs from the state file and their memory and processes re-read per query."""

    def __init__(self, path: Path) -> None:
        self.path = path
        state = read_state(path)
        gpus = [FakeNvidiaGpu(name=g["name"], uuid=g["uuid"], bus_id=g["bus_id"], total_bytes=g["total_mib"] * MiB)
                for g in state["gpus"]]
        super().__init__(gpus, driver_version=state["driver_version"])

    def _device(self, name: str, handle: object) -> FakeNvidiaGpu:
        state = read_state(self.path)
        per_process = state.get("per_process", True)
        for index, gpu in enumerate(self.gpus):
            gpu.used_bytes = used_mib(state, index) * MiB
            gpu.compute_processes = [(a["pid"], a["mib"] * MiB if per_process else None)
                                     for a in state.get("allocations", []) if a["gpu"] == index]
        return super()._device(name, handle)


def smi_main(argv: list[str]) -> int:
    """`nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits`, and nothing else."""
    query = next((a.split("=", 1)[1] for a in argv if a.startswith("--query-gpu=")), None)
    if query is None or "--format=csv,noheader,nounits" not in argv:
        print(f"stand-in nvidia-smi: only --query-gpu=… --format=csv,noheader,nounits, not {argv}", file=sys.stderr)
        return 2
    state = read_state(Path(os.environ[STATE_ENV]))
    if not state["gpus"]:
        print("No devices were found")
        return 6
    rows = []
    for index, gpu in enumerate(state["gpus"]):
        used = used_mib(state, index) - state.get("reserved_mib", 0)
        values = {"count": len(state["gpus"]), "index": index, "name": gpu["name"], "uuid": gpu["uuid"],
                  "pci.bus_id": gpu["bus_id"], "memory.total": gpu["total_mib"], "memory.used": used,
                  "memory.free": gpu["total_mib"] - used - state.get("reserved_mib", 0),
                  "driver_version": state["driver_version"]}
        values.update(state.get("smi", {}).get(str(index), {}))
        fields = query.split(",")
        unknown = [f for f in fields if f not in values]
        if unknown:
            print(f'Field "{unknown[0]}" is not a valid field to query.', file=sys.stderr)
            return 2
        rows.append(", ".join(str(values[f]) for f in fields))
    print("\n".join(rows))
    return 0


def allocate_main(size: int) -> int:
    """Hold `size` bytes (plus the context) on GPU 0 in the state file until stdin closes."""
    path = Path(os.environ[STATE_ENV])
    state = read_state(path)
    entry = {"pid": os.getpid(), "gpu": 0, "mib": size // MiB + state.get("context_mib", 0)}
    state.setdefault("allocations", []).append(entry)
    write_state(path, state)
    print(f"ready {os.getpid()} stand-in allocator", flush=True)
    sys.stdin.read()
    state = read_state(path)
    state["allocations"] = [a for a in state["allocations"] if a["pid"] != entry["pid"]]
    write_state(path, state)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["allocate"]:
        sys.exit(allocate_main(int(sys.argv[2])))
    sys.exit(smi_main(sys.argv[1:]))
