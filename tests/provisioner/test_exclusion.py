# SPDX-License-Identifier: AGPL-3.0-or-later
"""Swap groups: on-demand instances that do not fit together are exclusive, checked against brute force."""

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from ozwald.config import parse_settings
from ozwald.provisioner.admission import assess, reservations
from ozwald.provisioner.exclusion import SwapRoom, exclusive_pairs
from tests.provisioner.test_admission import TWO_NVIDIA, inst


def room(vram: float, memory: float, **needs: tuple[float, float]) -> SwapRoom:
    return SwapRoom({"vram:0": vram, "memory": memory},
                    {n: {"vram:0": v, "memory": m} for n, (v, m) in needs.items()})


def test_two_that_do_not_fit_together_swap_and_one_that_fits_beside_both_does_not() -> None:
    pairs = exclusive_pairs(room(80, 64, a=(50, 1), b=(40, 1), c=(20, 1)))
    assert pairs == {"a": ("b",), "b": ("a",)}


def test_memory_counts_too() -> None:
    assert exclusive_pairs(room(80, 16, a=(0, 10), b=(0, 10))) == {"a": ("b",), "b": ("a",)}


def test_three_that_fit_two_by_two_but_not_all_three_lose_their_largest_pair() -> None:
    # a+b = 60, a+c = 55, b+c = 45, all three 80 > 70: the two largest users of VRAM swap
    pairs = exclusive_pairs(room(70, 64, a=(35, 0), b=(25, 0), c=(20, 0)))
    assert pairs == {"a": ("b",), "b": ("a",)}


def test_one_that_does_not_fit_alone_swaps_with_every_other_that_needs_the_same_resource() -> None:
    pairs = exclusive_pairs(room(40, 64, big=(50, 0), a=(10, 0), free=(0, 1)))
    assert pairs == {"big": ("a", "free"), "a": ("big",), "free": ("big",)}


needs = st.dictionaries(st.sampled_from("abcdefg"), st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=7)


@settings(max_examples=300, deadline=None)
@given(needs, st.integers(0, 100), st.integers(0, 40))
def test_every_set_that_may_run_together_fits_and_every_pair_that_cannot_swaps(
        wanted: dict[str, tuple[int, int]], vram: int, memory: int) -> None:
    swap = room(vram, memory, **{n: (float(v), float(m)) for n, (v, m) in wanted.items()})
    pairs = exclusive_pairs(swap)
    for a, partners in pairs.items():
        assert all(a in pairs[b] for b in partners)  # symmetric
    names = sorted(wanted)

    def fits(group: tuple[str, ...]) -> bool:
        return (sum(wanted[n][0] for n in group) <= vram and sum(wanted[n][1] for n in group) <= memory)

    for size in range(2, len(names) + 1):
        for group in combinations(names, size):
            together = all(b not in pairs.get(a, ()) for a, b in combinations(group, 2))
            if together:
                assert fits(group), f"{group} may run together but needs more than {vram}/{memory}"
            if size == 2 and not fits(group):
                assert not together


SETTINGS = parse_settings("""\
services:
  - name: chat
    image: x
    on_demand: true
    ports: ["8080:8000"]
    devices: ["nvidia.com/gpu=0"]
    resources: {vram_gb: 50}
  - name: code
    image: x
    on_demand: true
    ports: ["8081:8000"]
    devices: ["nvidia.com/gpu=0"]
    resources: {vram_gb: 40}
  - name: embed
    image: x
    on_demand: true
    ports: ["8082:8000"]
    devices: ["nvidia.com/gpu=0"]
    resources: {vram_gb: 20}
  - name: always
    image: x
    devices: ["nvidia.com/gpu=0"]
    resources: {vram_gb: 20}
""")


def test_admission_checks_each_on_demand_instance_alone_beside_the_always_on_ones() -> None:
    fit = assess(SETTINGS, [inst("chat", "chat"), inst("code", "code"), inst("embed", "embed"),
                            inst("always", "always")], TWO_NVIDIA)
    assert fit.conflicts == []  # 20 + 50 fits 80; the on-demand ones are never summed
    assert fit.exclusive_with == {"chat": ("code", "embed"), "code": ("chat",), "embed": ("chat",)}
    gpu = TWO_NVIDIA.gpus[0].id
    assert reservations(fit)[f"vram:{gpu}"] == (20 + 50) * 1024  # the always-on one and the largest on demand
    assert fit.for_instance("code", TWO_NVIDIA)[gpu]["vram_declared_total_mib"] == (20 + 40) * 1024


def test_an_on_demand_instance_that_does_not_fit_beside_the_always_on_ones_is_refused_by_name() -> None:
    big = parse_settings(SETTINGS.model_dump_json().replace('"vram_gb":20.0', '"vram_gb":35.0'))
    fit = assess(big, [inst("chat", "chat"), inst("embed", "embed"), inst("always", "always")], TWO_NVIDIA)
    [conflict] = fit.conflicts
    assert conflict.instances == ("always", "chat")  # 35 + 50 > 80; embed (35) fits beside it
    assert conflict.needed == 85
    assert "always" not in fit.exclusive_with


def test_always_on_instances_are_still_summed_and_never_swap() -> None:
    four = [inst(f"always{i}", "always") for i in range(4)]
    assert assess(SETTINGS, four, TWO_NVIDIA).conflicts == []
    fit = assess(SETTINGS, [*four, inst("always4", "always")], TWO_NVIDIA)
    assert [c.needed for c in fit.conflicts] == [100]
    assert fit.exclusive_with == {}
