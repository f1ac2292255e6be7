# SPDX-License-Identifier: AGPL-3.0-or-later
"""Fixtures that put stand-in vendor bindings where `import pynvml` / `import amdsmi` find them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

# The stand-ins live in fakes/ under names no real package uses, so adding the directory to the
# path cannot shadow anything; the backends still import them as "pynvml" / "amdsmi".
_FAKES = str(Path(__file__).parent / "fakes")
if _FAKES not in sys.path:
    sys.path.insert(0, _FAKES)

import ozwald_fake_amdsmi  # noqa: E402
import ozwald_fake_pynvml  # noqa: E402

Describer = Callable[[str], str | None]  # a PCI bus id -> a description, or None


class Installer:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self._monkeypatch = monkeypatch
        self._name = name

    def __call__(self, fake: ozwald_fake_pynvml.FakeNvml | ozwald_fake_amdsmi.FakeAmdSmi) -> ModuleType:
        module = fake.module()
        self._monkeypatch.setitem(sys.modules, self._name, module)
        return module

    def missing(self) -> None:
        """As if the package were not installed: the import system raises ModuleNotFoundError."""
        self._monkeypatch.setitem(sys.modules, self._name, None)


@pytest.fixture
def install_pynvml(monkeypatch: pytest.MonkeyPatch) -> Installer:
    return Installer(monkeypatch, "pynvml")


@pytest.fixture
def install_amdsmi(monkeypatch: pytest.MonkeyPatch) -> Installer:
    return Installer(monkeypatch, "amdsmi")


@pytest.fixture
def no_pci_sysfs() -> Describer:
    """A PCI describer that knows nothing, so tests do not depend on the machine's /sys."""
    return lambda bus_id: None


@pytest.fixture
def isolated_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Forget a package and its submodules so the next import really executes it."""

    def forget(name: str) -> None:
        for module_name in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, module_name)

    yield forget
