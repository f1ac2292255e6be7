# SPDX-License-Identifier: AGPL-3.0-or-later
"""What Ozwald knows about each settings key, declared next to the key itself.

A key of `Layer` (the keys allowed on a service, a variety and a profile) is declared once, as
`name: Annotated[type | None, Key(...)] = None`. The `Key` says how its levels merge, whether only a
container may set it, whether it enters the spec hash, its default and its documentation line. Resolution,
the spec hash, the check that a non-container service sets no container key, and the README's settings
table are all derived from these declarations, so a new key cannot be forgotten by one of them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class Merge(enum.Enum):
    """How the base < variety < profile levels of one key combine."""

    MOST_SPECIFIC = "most specific level that sets it"
    MAP = "merged key by key"
    FIELDS = "merged field by field"


@dataclass(frozen=True)
class Key:
    """The facts about one settings key; see the module docstring."""

    doc: str
    merge: Merge = Merge.MOST_SPECIFIC
    container_only: bool = True
    hashed: bool = True
    default: Any = None
    # A key added after specs were first hashed enters the hash only when set: an upgrade must not change the
    # hash, and so restart, every running instance that does not use it.
    hashed_when_set: bool = False


def keys_of(model: type[BaseModel]) -> dict[str, Key]:
    """Every field of `model` that carries a `Key`, in declaration order."""
    found: dict[str, Key] = {}
    for name, info in model.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, Key):
                found[name] = meta
    return found


def markdown_table(keys: Mapping[str, Key]) -> str:
    """The README's settings table: one row per key, in declaration order."""
    rows = ["| key | merge | containers only | meaning |", "|---|---|---|---|"]
    for name, key in keys.items():
        merge = "by key" if key.merge is Merge.MAP else "by field" if key.merge is Merge.FIELDS else "replaces"
        rows.append(f"| `{name}` | {merge} | {'yes' if key.container_only else 'no'} | {key.doc} |")
    return "\n".join(rows) + "\n"
