# SPDX-License-Identifier: AGPL-3.0-or-later
"""What every GPU vendor detector shares: open once, keep the handles, degrade instead of raising.

Initialising a vendor library is the slow part (NVML can take hundreds of milliseconds without
persistence mode) and handles stay valid while it is initialised, so a backend opens the library on
first use, keeps it open, and per snapshot only asks for the live numbers. When opening fails the
vendor is reported unavailable with the reason; failures that a later attempt could cure (driver
not loaded yet at boot) are retried after `retry_after` seconds, failures that cannot (Python
package missing) are not retried for the life of the process.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar, Protocol, TypedDict, TypeVar, Unpack

from ozwald.errors import Exit, OzwaldError
from ozwald.resources._failures import FailureLog, describe
from ozwald.resources.models import GpuInfo, Vendor, VendorStatus
from ozwald.resources.pci import describe_pci_device

log = logging.getLogger("ozwald.resources")

T = TypeVar("T")

DEFAULT_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class VendorReading:
    """One vendor's part of a snapshot."""

    status: VendorStatus
    gpus: tuple[GpuInfo, ...] = ()


class GpuBackend(Protocol):
    """The interface the host monitor needs from a vendor detector."""

    @property
    def vendor(self) -> Vendor: ...

    def open(self) -> VendorStatus: ...

    def read(self) -> VendorReading: ...

    def close(self) -> None: ...


class Unavailable(OzwaldError):
    """Raised while opening a vendor library to mark the vendor unavailable with `reason`.

    `absent` marks the ordinary case of a host without that vendor's hardware or software, which
    is logged at INFO; a broken stack on a host that has the hardware is logged as a WARNING.
    """

    exit_status = Exit.UNREACHABLE
    http_status = 503

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        absent: bool = False,
        driver_version: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.absent = absent
        self.driver_version = driver_version


def text_or_none(value: object) -> str | None:
    """Decode what the bindings return for strings: bytes in older nvidia-ml-py, str in newer,
    "N/A" from amdsmi for fields the device does not implement."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.strip().rstrip("\x00")
    return None if not value or value.upper() == "N/A" else value


def int_or_none(value: object) -> int | None:
    """amdsmi returns "N/A" strings where a counter is unsupported; bools are not counts."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def call(module: ModuleType, function: str, *args: object) -> object:
    """Call a binding function looked up at call time, so that a binding version lacking it
    fails inside `attempt` (logged, field degraded) instead of while building the call."""
    return getattr(module, function)(*args)


def library_error(module: ModuleType, name: str) -> type[Exception]:
    """The exception base a binding documents, checked so a wrong stand-in fails loudly."""
    error = getattr(module, name, None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        raise Unavailable(
            f"{module.__name__} has no exception class {name}; unsupported binding version", permanent=True
        )
    return error


class BackendOptions(TypedDict, total=False):
    """Knobs shared by all vendor backends; tests shorten `retry_after` and inject `clock`."""

    retry_after: float
    describe_pci: Callable[[str], str | None]
    clock: Callable[[], float]


class VendorBackend(ABC):
    """Template for one vendor: subclasses import, initialise, read and shut down the library.

    `loader` replaces the vendor's import seam (the module-level `load_*` function); leave it None
    in production.
    """

    vendor: ClassVar[Vendor]
    binding: ClassVar[str]  # the module the vendor's binding installs, e.g. "pynvml"
    install_hint: ClassVar[str]  # what to say when it is not installed
    error_base: ClassVar[str]  # the exception class every library call of the binding raises

    def __init__(self, loader: Callable[[], ModuleType] | None = None, **options: Unpack[BackendOptions]) -> None:
        self._loader = loader if loader is not None else self.default_loader
        self._retry_after = options.get("retry_after", DEFAULT_RETRY_AFTER)
        self._describe_pci = options.get("describe_pci", describe_pci_device)
        self._clock = options.get("clock", time.monotonic)
        # Serialises open/read/close: request threads share one library session and its handles.
        self._lock = threading.Lock()
        self._module: ModuleType | None = None
        self._error: type[Exception] = Exception
        self._open = False
        self._failure: VendorStatus | None = None
        self._permanent = False
        self._next_attempt = 0.0
        self._driver_version: str | None = None
        self.failures = FailureLog(log)

    # -- subclass hooks -------------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def default_loader() -> ModuleType:
        """Import the vendor binding (the narrow seam tests replace)."""

    def _load(self) -> ModuleType:
        """Import the binding through `self._loader`, translating import failures to Unavailable."""
        try:
            module = self._loader()
        except ImportError as exc:
            if exc.name == self.binding:
                raise Unavailable(self.install_hint, permanent=True, absent=True) from exc
            raise Unavailable(f"{self.binding} failed to import: {describe(exc)}", permanent=True) from exc
        except Exception as exc:
            raise self._import_failure(exc) from exc
        self._error = library_error(module, self.error_base)
        return module

    def _import_failure(self, exc: Exception) -> Unavailable:
        """An import that failed with something other than ImportError (a binding without its library)."""
        raise exc

    @abstractmethod
    def _start_library(self, module: ModuleType) -> None:
        """Initialise the library; raise Unavailable, saying why, when it cannot."""

    @abstractmethod
    def _enumerate(self, module: ModuleType) -> None:
        """Cache the device handles and their identity; raise Unavailable when there is nothing to read."""

    @abstractmethod
    def _collect(self) -> tuple[GpuInfo, ...]:
        """Read live numbers from the cached handles; must not raise for a single device."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Release the library session; called with the lock held."""

    # -- shared machinery -----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> VendorStatus:
        """Initialise now instead of on the first snapshot, so no request pays for it."""
        with self._lock:
            failure = self._ensure_open()
            return failure if failure is not None else self._available()

    def read(self) -> VendorReading:
        with self._lock:
            failure = self._ensure_open()
            if failure is not None:
                return VendorReading(failure)
            return VendorReading(self._available(), self._collect())

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._release()
            self._open = False
            self._failure = None
            self._permanent = False
            self._next_attempt = 0.0

    def _initialise(self, module: ModuleType) -> None:
        self._start_library(module)
        try:
            self._enumerate(module)
        except BaseException:
            self._release()  # balance the library's init count, or every retry would leak one
            raise

    def _release(self) -> None:
        try:
            self._shutdown()
        except self._error as exc:
            self.failures.expected(f"{self.vendor} shutdown", describe(exc))
        except Exception as exc:
            self.failures.unexpected(f"{self.vendor} shutdown", exc)

    def _available(self) -> VendorStatus:
        return VendorStatus(self.vendor, available=True, driver_version=self._driver_version)

    def _ensure_open(self) -> VendorStatus | None:
        if self._open:
            return None
        if self._failure is not None and (self._permanent or self._clock() < self._next_attempt):
            return self._failure
        try:
            module = self._module if self._module is not None else self._load()
            self._module = module
            self._initialise(module)
        except Unavailable as exc:
            level = logging.INFO if exc.absent else logging.WARNING
            self.failures.expected(f"{self.vendor} open", exc.reason, level)
            return self._fail(exc.reason, permanent=exc.permanent, driver_version=exc.driver_version)
        except Exception as exc:
            reason = self.failures.unexpected(f"{self.vendor} open", exc)
            return self._fail(reason, permanent=False, driver_version=None)
        self._open = True
        self._failure = None
        self.failures.forget(f"{self.vendor} open")
        log.info("%s GPU detection ready (driver %s)", self.vendor, self._driver_version or "version unknown")
        return None

    def _fail(self, reason: str, *, permanent: bool, driver_version: str | None) -> VendorStatus:
        self._failure = VendorStatus(self.vendor, available=False, reason=reason, driver_version=driver_version)
        self._permanent = permanent
        self._next_attempt = self._clock() + self._retry_after
        return self._failure

    def attempt(self, key: str, field: str, call: Callable[[], T], errors: list[str]) -> T | None:
        """Run one library query; on failure record "field: reason" in `errors` and return None.

        The library's own exceptions are expected conditions (unsupported, GPU lost, no
        permission). Anything else is a bug or an undocumented failure: it is logged with its
        traceback, and the device still degrades rather than taking the whole snapshot down.
        """
        try:
            return call()
        except self._error as exc:
            reason = describe(exc)
            self.failures.expected(f"{key} {field}", reason)
        except Exception as exc:
            reason = self.failures.unexpected(f"{key} {field}", exc)
        errors.append(f"{field}: {reason}")
        return None

    def attempt_identity(
        self, key: str, field: str, call: Callable[[], T], errors: list[str], pending: set[str]
    ) -> T | None:
        """`attempt` for a value that cannot change: once a call answers (even "N/A"), it is
        removed from `pending` and not asked again; a failed call stays pending for the next read."""
        if field not in pending:
            return None
        failures = len(errors)
        value = self.attempt(key, field, call, errors)
        if len(errors) == failures:
            pending.discard(field)
        return value

    def pci_description(self, bus_id: str | None) -> str | None:
        return None if bus_id is None else self._describe_pci(bus_id)
