"""Exceptions and argument checks shared by the core.

Every public entry point validates its arguments *before* changing anything,
with one of the helpers here, so the message always names the argument and
what it accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "PluginError",
    "UnknownBackendError",
    "check_callback",
    "check_fd",
    "check_int",
]


class BackendUnavailable(RuntimeError):
    """A backend asked for by name cannot run here; ``reasons`` says why.

    ``reasons`` maps each backend tried to the reason it could not be used.
    """

    def __init__(self, message: str, reasons: dict[str, str]) -> None:
        super().__init__(message)
        self.reasons = reasons


class UnknownBackendError(ValueError):
    """A backend name that no plugin registered."""


class ConfigError(ValueError):
    """A configuration value (file, environment) is malformed.

    The message names where the value came from (file and key, or the
    environment variable) and what is accepted.
    """


class PluginError(RuntimeError):
    """A plugin failed to load or register, or two plugins clash."""


def check_int(value: object, argname: str) -> int:
    """Return *value* if it is an ``int`` (``bool`` excluded), else raise ``TypeError``."""
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{argname} must be an int, got {type(value).__name__} {value!r}")


#: The largest fd number: fds are C ints, and a larger number would reach a
#: backend's system call wrapper and fail there (OverflowError) unnamed.
_FD_MAX = 2**31 - 1


def check_fd(fd: object, argname: str = "fd") -> int:
    """Return the file descriptor number of *fd* (an int >= 0, or an object with fileno())."""
    if type(fd) is not int:
        if isinstance(fd, bool) or not (isinstance(fd, int) or hasattr(fd, "fileno")):
            raise TypeError(
                f"{argname} must be an int file descriptor or an object with fileno(), "
                f"got {type(fd).__name__} {fd!r}"
            )
        fd = int(fd) if isinstance(fd, int) else fd.fileno()
        if type(fd) is not int:
            raise TypeError(f"{argname}.fileno() must return an int, got {fd!r}")
    if not 0 <= fd <= _FD_MAX:
        raise ValueError(f"{argname} must be >= 0 and <= {_FD_MAX} (a C int), got {fd}")
    return fd


def check_callback(cb: object, argname: str, *, optional: bool = False) -> Any:
    """Return *cb* if it is callable (or ``None`` when *optional*), else raise ``TypeError``."""
    if cb is None and optional:
        return None
    if not callable(cb):
        accepted = "a callable or None" if optional else "a callable"
        raise TypeError(f"{argname} must be {accepted}, got {type(cb).__name__} {cb!r}")
    return cb


def check_nonneg_int(value: object, argname: str) -> int:
    """Return *value* if it is an int >= 0, else raise naming *argname*."""
    v = check_int(value, argname)
    if v < 0:
        raise ValueError(f"{argname} must be >= 0, got {v}")
    return v


CallbackType = Callable[[Any], object]
