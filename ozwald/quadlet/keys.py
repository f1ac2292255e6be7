# SPDX-License-Identifier: AGPL-3.0-or-later
"""Every Quadlet key Ozwald emits, with the first Podman version that accepts it.

A key the installed Podman does not know makes its generator drop the whole unit ("Unit … not found"),
so the renderer checks each key against this table before writing it.
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, int]

QUADLET_MIN: Version = (4, 4)
NEWEST_KNOWN: Version = (5, 4)


@dataclass(frozen=True)
class KeySupport:
    section: str
    key: str
    since: Version
    value: str | None = None  # a specific value that needs a newer Podman than the key itself


KEYS: tuple[KeySupport, ...] = (
    KeySupport("Container", "Image", (4, 4)),
    KeySupport("Container", "ContainerName", (4, 4)),
    KeySupport("Container", "Environment", (4, 4)),
    KeySupport("Container", "EnvironmentFile", (4, 4)),  # a relative path is next to the unit file
    KeySupport("Container", "Label", (4, 4)),
    KeySupport("Container", "AddDevice", (4, 4)),
    KeySupport("Container", "PublishPort", (4, 4)),
    KeySupport("Container", "Volume", (4, 4)),
    KeySupport("Container", "Exec", (4, 4)),
    KeySupport("Container", "HealthCmd", (4, 5)),
    KeySupport("Container", "HealthInterval", (4, 5)),
    KeySupport("Container", "HealthRetries", (4, 5)),
    KeySupport("Container", "HealthStartPeriod", (4, 5)),
    KeySupport("Container", "HealthTimeout", (4, 5)),
    KeySupport("Container", "ShmSize", (4, 7)),
    KeySupport("Container", "Entrypoint", (5, 0)),
    KeySupport("Container", "StopTimeout", (5, 0)),
    KeySupport("Container", "Notify", (4, 4)),
    KeySupport("Container", "Notify", (5, 0), value="healthy"),
)

_SINCE: dict[tuple[str, str, str | None], Version] = {(k.section, k.key, k.value): k.since for k in KEYS}


def since(section: str, key: str, value: str | None = None) -> Version:
    """The first Podman version accepting `key` (with `value`, where that value is newer than the key)."""
    if (section, key, value) in _SINCE:
        return _SINCE[(section, key, value)]
    try:
        return _SINCE[(section, key, None)]
    except KeyError:
        raise KeyError(f"[{section}] {key} is not in the Quadlet key table") from None


def parse_version(text: str) -> Version:
    """`5.4.2`, `4.9`, `podman version 5.4.2` → (major, minor)."""
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return int(parts[0]), int(parts[1])
    raise ValueError(f"cannot read a Podman version from {text!r}")


def format_version(version: Version) -> str:
    return f"{version[0]}.{version[1]}"
