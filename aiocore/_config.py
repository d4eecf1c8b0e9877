"""Configuration: which backend a context uses, its options, poll parameters.

Precedence, highest first: the ``AioContext(...)`` argument, the environment
(``AIOCORE_BACKEND``), the config file, then the default (``auto``).

The config file is the first of:

1. the file named by ``AIOCORE_CONFIG`` (a ``pyproject.toml`` is read under
   ``[tool.aiocore]``, any other file at its top level);
2. searching from the current directory upwards, in the first directory that
   has one: ``aiocore.toml`` (top level), else ``pyproject.toml``'s
   ``[tool.aiocore]`` table.  The search stops at the first directory holding a
   ``pyproject.toml``, the project's root, so a config never leaks in from a
   parent project.

Keys (all optional)::

    backend = "auto"              # or ["io_uring", "epoll"]: the first available
    notifier = "eventfd"          # EventNotifier implementation for contexts
    poll_max_ns = 0               # adaptive polling window cap, 0 = off
    poll_grow = 0                 # 0 means 2
    poll_shrink = 0               # 0 means "reset to 0"
    [backends.auto]               # per-backend options: [tool.aiocore.backends.auto]
    epoll_threshold = 64

Every error names the file and the key.  Parsed files are cached by path,
size and modification time, so creating many contexts reads the file once.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ._errors import ConfigError, UnknownBackendError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from ._plugins import PluginRegistry

__all__ = ["ConfigFile", "Resolved", "Setting", "find_config_file", "resolve"]

DEFAULT_BACKEND: Final = "auto"
_TOP_KEYS: Final = ("backend", "notifier", "poll_max_ns", "poll_grow", "poll_shrink", "backends")
_POLL_KEYS: Final = ("poll_max_ns", "poll_grow", "poll_shrink")


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (for ``aiocore info``)."""

    value: Any
    origin: str


@dataclass(frozen=True)
class ConfigFile:
    """A config file's aiocore table, parsed and checked at the top level."""

    path: Path
    table: str  # "[tool.aiocore]" or "" for a top-level aiocore.toml
    data: Mapping[str, Any]

    def where(self, key: str) -> str:
        """Describe *key*'s location for error messages and ``aiocore info``."""
        prefix = "tool.aiocore." if self.table else ""
        return f"{self.path}: key {prefix}{key}"


_cache: dict[tuple[int, int, int, int], ConfigFile | None] = {}
_cache_lock = threading.Lock()


def _read(path: Path, pyproject: bool) -> ConfigFile | None:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    # The file's identity (device, inode), not the path as given: a relative
    # AIOCORE_CONFIG names another file in another working directory, and a
    # copy with its times kept (cp -p, tar) has the same size and mtime.
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib does not wrap this one
        reason = f"not UTF-8 ({exc.reason} at byte {exc.start})"
        raise ConfigError(f"{path}: not valid TOML: {reason}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if pyproject:
        tool = doc.get("tool", {})
        data = tool.get("aiocore") if isinstance(tool, dict) else None
        if data is None:
            result = None
        elif not isinstance(data, dict):
            raise ConfigError(f"{path}: [tool.aiocore] must be a table")
        else:
            result = ConfigFile(path, "[tool.aiocore]", data)
    else:
        result = ConfigFile(path, "", doc)
    if result is not None:
        _check_file(result)
    with _cache_lock:
        _cache[key] = result
    return result


def _check_file(cf: ConfigFile) -> None:
    for key, value in cf.data.items():
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{cf.where(key)}: unknown key; accepted keys: {', '.join(_TOP_KEYS)}"
            )
        if key == "backend":
            check_backend_value(value, cf.where(key))
        elif key == "notifier" and not isinstance(value, str):
            raise ConfigError(f"{cf.where(key)}: must be a string, got {value!r}")
        elif key in _POLL_KEYS and (type(value) is not int or value < 0):
            raise ConfigError(f"{cf.where(key)}: must be an integer >= 0, got {value!r}")
        elif key == "backends" and (
            not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values())
        ):
            raise ConfigError(
                f"{cf.where(key)}: must be a table of tables, one per backend "
                f"(for example [tool.aiocore.backends.auto])"
            )


def check_backend_value(value: object, where: str) -> list[str]:
    """Return *value* (a name or a list of names) as a non-empty list of names."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",")] if "," in value else [value.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise ConfigError(f"{where}: must be a backend name or a list of names, got {value!r}")
    if not any(names):
        raise ConfigError(f"{where}: must name at least one backend, got {value!r}")
    if not all(names):
        empty = names.index("") + 1
        raise ConfigError(f"{where}: has an empty backend name (item {empty}), got {value!r}")
    return names


def find_config_file(
    env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> ConfigFile | None:
    """Find and parse the config file (see the module docstring), or ``None``."""
    env = os.environ if env is None else env
    explicit = env.get("AIOCORE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"AIOCORE_CONFIG={explicit!r} does not name a file")
        cf = _read(path, path.name == "pyproject.toml")
        if cf is None:
            raise ConfigError(f"AIOCORE_CONFIG={explicit!r}: the file has no [tool.aiocore] table")
        return cf
    if cwd is None:
        try:
            cwd = Path.cwd()
        except OSError:
            # The working directory was removed: there is no directory to
            # search from, so no file applies (AIOCORE_CONFIG still does).
            return None
    here = cwd.resolve()
    for directory in (here, *here.parents):
        candidate = directory / "aiocore.toml"
        if candidate.is_file():
            return _read(candidate, False)
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return _read(candidate, True)
    return None


@dataclass
class Resolved:
    """Everything a context needs from configuration, with origins."""

    backend: Setting
    poll: dict[str, Setting]
    notifier: Setting
    file: ConfigFile | None
    backend_options: dict[str, Setting] = field(default_factory=dict)

    def check_names(self, registry: PluginRegistry) -> None:
        """Raise for a backend or notifier name no plugin registered.

        The message starts with where the name came from (the file and key,
        or the environment variable) unless it was an argument.
        """
        try:
            registry.check_backend_names(self.backend.value)
        except UnknownBackendError as exc:
            if self.backend.origin.startswith("argument"):
                raise
            raise UnknownBackendError(f"{self.backend.origin}: {exc}") from None
        kind = self.notifier.value
        if kind is not None and kind not in registry.notifiers:
            known = ", ".join(sorted(registry.notifiers)) or "(none registered)"
            raise ConfigError(
                f"{self.notifier.origin}: unknown notifier kind {kind!r}; known kinds: {known}"
            )

    def options_for(self, registry: PluginRegistry, name: str) -> dict[str, Any]:
        """The checked options of backend *name*: defaults, then the file's values."""
        cls = registry.backends[name].cls
        result = {key: opt.default for key, opt in cls.options.items()}
        setting = self.backend_options.get(name)
        if setting is None:
            return result
        for key, value in setting.value.items():
            where = f"{setting.origin}.{key}"
            opt = cls.options.get(key)
            if opt is None:
                accepted = ", ".join(cls.options) or "(none)"
                raise ConfigError(
                    f"{where}: backend {name!r} has no option {key!r}; accepted: {accepted}"
                )
            try:
                result[key] = opt.check(key, value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
        return result


def resolve(
    backend: str | Sequence[str] | None = None,
    *,
    poll: Mapping[str, int | None] | None = None,
    env: Mapping[str, str] | None = None,
    registry: PluginRegistry | None = None,
) -> Resolved:
    """Resolve the settings for one context; see the module docstring.

    *backend* and *poll* are the constructor's arguments (already type-checked).
    With *registry*, backend names and per-backend option tables are checked
    against what is registered.
    """
    env = os.environ if env is None else env
    cf = find_config_file(env)
    data: Mapping[str, Any] = cf.data if cf is not None else {}

    if backend is not None:
        names = [backend] if isinstance(backend, str) else list(backend)
        backend_setting = Setting(names, "argument backend=")
    elif env.get("AIOCORE_BACKEND", "").strip():
        raw = env["AIOCORE_BACKEND"]
        names = check_backend_value(raw, "environment variable AIOCORE_BACKEND")
        backend_setting = Setting(names, "environment variable AIOCORE_BACKEND")
    elif cf is not None and "backend" in data:
        backend_setting = Setting(
            check_backend_value(data["backend"], cf.where("backend")), cf.where("backend")
        )
    else:
        backend_setting = Setting([DEFAULT_BACKEND], "default")

    poll_settings: dict[str, Setting] = {}
    for key in _POLL_KEYS:
        arg = (poll or {}).get(key)
        if arg is not None:
            poll_settings[key] = Setting(arg, f"argument {key}=")
        elif cf is not None and key in data:
            poll_settings[key] = Setting(data[key], cf.where(key))
        else:
            poll_settings[key] = Setting(0, "default")

    if cf is not None and "notifier" in data:
        notifier = Setting(data["notifier"], cf.where("notifier"))
    else:
        notifier = Setting(None, "default")

    options: dict[str, Setting] = {}
    if cf is not None:
        for name, table in data.get("backends", {}).items():
            options[name] = Setting(table, cf.where(f"backends.{name}"))
    resolved = Resolved(backend_setting, poll_settings, notifier, cf, options)

    if registry is not None:
        for name, setting in options.items():
            if name not in registry.backends:
                known = ", ".join(sorted(registry.backends))
                raise ConfigError(
                    f"{setting.origin}: no backend {name!r} is registered; known backends: {known}"
                )
    return resolved
