# SPDX-License-Identifier: AGPL-3.0-or-later
"""Which on-demand instances swap: those that do not fit together beside the instances that always run.

Admission reserves what every always-on instance declares (or was measured to need), and checks each
on-demand instance alone on top of that. Two on-demand instances are then exclusive when, together, they
need more than is left on a GPU they share or in the host's memory: starting one stops the other first.
Pairs are not the whole story: three instances that fit two by two may not fit all three. Every set of
instances that may run together (a clique of the "not exclusive" graph) must fit, so while one does not,
its two largest users of the resource it overflows become exclusive too. Instances are few (a host's
on-demand models), so enumerating the maximal cliques is cheap.

CPU is not a reason to swap: a CPU is shared, not exhausted, and admission already checks each instance's
`cpus` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class SwapRoom:
    """What the always-on instances leave, and what each on-demand instance needs of it."""

    # resource → room left beside the always-on instances (MiB of a GPU's VRAM as "vram:<id>", GB as "memory")
    room: Mapping[str, float]
    # on-demand instance → resource → what it needs
    needs: Mapping[str, Mapping[str, float]]


def _overflow(group: Set[str], room: SwapRoom) -> str | None:
    """The first resource (in name order) the instances of `group` overflow together, or None."""
    for resource in sorted(room.room):
        if sum(room.needs[n].get(resource, 0.0) for n in group) > room.room[resource] + 1e-9:
            return resource
    return None


def _maximal_cliques(nodes: list[str], compatible: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """Bron–Kerbosch with a pivot: every maximal set of nodes that are pairwise compatible."""
    found: list[frozenset[str]] = []

    def extend(clique: set[str], candidates: set[str], excluded: set[str]) -> None:
        if not candidates and not excluded:
            found.append(frozenset(clique))
            return
        pivot = max(sorted(candidates | excluded), key=lambda n: len(compatible[n] & candidates))
        for node in sorted(candidates - compatible[pivot]):
            extend(clique | {node}, candidates & compatible[node], excluded & compatible[node])
            candidates = candidates - {node}
            excluded = excluded | {node}

    extend(set(), set(nodes), set())
    return sorted(found, key=lambda c: sorted(c))


def exclusive_pairs(room: SwapRoom) -> dict[str, tuple[str, ...]]:
    """Each on-demand instance → the instances it swaps with (sorted); instances with none are left out."""
    nodes = sorted(room.needs)
    compatible: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in combinations(nodes, 2):
        if _overflow({a, b}, room) is None:
            compatible[a].add(b)
            compatible[b].add(a)
    while True:
        overfull = [(c, r) for c in _maximal_cliques(nodes, compatible)
                    if len(c) > 1 and (r := _overflow(c, room)) is not None]  # one alone: admission's to refuse
        if not overfull:
            break
        clique, resource = overfull[0]
        a, b = sorted(clique, key=lambda n: (-room.needs[n].get(resource, 0.0), n))[:2]
        compatible[a].discard(b)
        compatible[b].discard(a)
    return {n: tuple(sorted(set(nodes) - compatible[n] - {n})) for n in nodes if set(nodes) - compatible[n] - {n}}
