"""Plugin loading on pluggy: built-ins by short name, then the entry-point group.

Order of loading (pytest's, adapted):

1. The hook specifications of :mod:`aiocore.hookspec`.
2. The built-in plugins, each an ordinary plugin module in the
   ``aiocore_plugins`` package, registered under its short name
   (:data:`BUILTIN_PLUGINS`).
3. Unless ``AIOCORE_DISABLE_PLUGIN_AUTOLOAD=1``, every entry point of the
   ``aiocore`` group, registered under the entry point's name.

``AIOCORE_BLOCK_PLUGINS=a,b`` blocks plugins by the names ``aiocore plugins``
shows, built-ins included.  A plugin that fails to import, has a misspelt hook,
or raises in a registration hook is skipped with a warning naming it, unless
``AIOCORE_STRICT_PLUGINS=1``, which raises :class:`PluginError`.  Two plugins
registering one backend name is always an error: picking one silently would
be the kind of fallback a user cannot see.

A :class:`PluginRegistry` is an ordinary object: nothing is loaded at
``import aiocore``.  :func:`default_registry` builds the process's registry on
first use; tests build their own and pass it to ``AioContext(registry=...)``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, cast

import pluggy

from . import hookspec
from ._errors import BackendUnavailable, PluginError, UnknownBackendError
from ._notifier import EventNotifier
from ._sources import SourceNamespace
from .backend import Backend, BackendSetup, Option

if TYPE_CHECKING:
    from ._context import AioContext

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "BackendInfo",
    "PluginInfo",
    "PluginRegistry",
    "PluginWarning",
    "Registrar",
    "default_registry",
]

log = logging.getLogger("aiocore")

#: Short names of the built-in plugins, in load order; each is the module
#: ``aiocore_plugins.<name>``.
BUILTIN_PLUGINS: Final = (
    "notifier",
    "poll",
    "epoll",
    "io_uring",
    "kqueue",
    "auto",
    "notifier_source",
    "timer_source",
    "socket_source",
    "shmring_source",
)
BUILTIN_PACKAGE: Final = "aiocore_plugins"
#: The entry-point group, which is also pluggy's project name.
ENTRY_POINT_GROUP: Final = "aiocore"


#: A backend or notifier name: it appears in comma-separated lists
#: (``AIOCORE_BACKEND``) and as a TOML key (``[backends.NAME]``).
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to load or register."""


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


@dataclass
class PluginInfo:
    """What ``aiocore plugins`` shows about one plugin."""

    name: str
    module: str
    dist: str | None
    builtin: bool
    status: str = "loaded"  # "loaded", "blocked" or "failed"
    error: str | None = None
    provides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend class and who provides it."""

    name: str
    cls: type[Backend]
    plugin: str
    dist: str | None


@dataclass(frozen=True)
class NotifierInfo:
    """A registered :class:`EventNotifier` implementation and who provides it."""

    name: str
    cls: type[EventNotifier]
    plugin: str
    dist: str | None


@dataclass(frozen=True)
class SourceInfo:
    """A registered handler-source factory and who provides it."""

    name: str
    factory: Callable[[AioContext], object]
    plugin: str
    dist: str | None


class Registrar:
    """The ``register`` callable handed to one plugin's registration hook.

    It records what the plugin registers so that a plugin that fails half-way
    leaves nothing behind, and so every registration is attributed.
    """

    def __init__(self, kind: str, plugin: str) -> None:
        self.kind = kind
        self.plugin = plugin
        self.items: list[tuple[str, Any]] = []

    def __call__(self, *args: Any) -> None:
        # Everything is checked here, in the plugin's own hook, so a mistake
        # fails that plugin by name (it is skipped, or raises when strict)
        # instead of surfacing later in every context or under another name.
        kind = self.kind
        if kind == "source":
            if len(args) != 2:
                raise TypeError(f"register() takes a name and a factory, got {len(args)} arguments")
            name, obj = args
            if (
                not isinstance(name, str)
                or not name.isidentifier()
                or name.startswith("_")
                or hasattr(SourceNamespace, name)  # ctx.sources.close would shadow it
            ):
                raise ValueError(
                    "source name must be an identifier that does not start with '_' and is "
                    f"not a method of ctx.sources ('close'), got {name!r}"
                )
            if not callable(obj):
                raise TypeError(f"source factory must be callable, got {obj!r}")
        else:
            base: type = Backend if kind == "backend" else EventNotifier
            if len(args) != 1:
                raise TypeError(
                    f"register() takes one {base.__name__} subclass, got {len(args)} arguments"
                )
            (obj,) = args
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise TypeError(f"register() takes a {base.__name__} subclass, got {obj!r}")
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ValueError(
                    f"{obj.__qualname__}.name must be a {kind} name (letters, digits, '_' and "
                    f"'-', not starting with a digit or '-'), got {name!r}"
                )
            if kind == "backend":
                options = cast("type[Backend]", obj).options
                if not isinstance(options, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, Option) for k, v in options.items()
                ):
                    raise TypeError(
                        f"{obj.__qualname__}.options must map option names (str) to "
                        f"aiocore.backend.Option, got {options!r}"
                    )
        if any(n == name for n, _ in self.items):
            raise ValueError(f"{kind} {name!r} is registered twice by this plugin")
        self.items.append((name, obj))


class _Manager(pluggy.PluginManager):
    """A PluginManager that treats every ``aiocore_*`` function as a hook.

    pluggy alone ignores an unmarked function, so a plugin with a typo in a
    hook name would load and silently do nothing.  Treating the prefix as a
    claim (as pytest does) lets ``check_pending()`` name the typo.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("aiocore_"):
            method = getattr(plugin, name, None)
            if callable(method) and not isinstance(method, type):
                return {}
        return opts


def _identity(obj: object) -> object:
    return obj


def _dist_label(dist: metadata.Distribution | None) -> str | None:
    if dist is None:
        return None
    return f"{dist.metadata['Name']} {dist.version}"


def _own_dist() -> str:
    try:
        return f"aiocore {metadata.version('aiocore')}"
    except metadata.PackageNotFoundError:
        return "aiocore (not installed)"


class PluginRegistry:
    """Loaded plugins and what they registered: backends, notifiers, sources.

    :param autoload: load the ``aiocore`` entry-point group (default: unless
        ``AIOCORE_DISABLE_PLUGIN_AUTOLOAD`` is set).
    :param block: plugin names not to load (default: ``AIOCORE_BLOCK_PLUGINS``).
    :param strict: raise instead of skipping a broken plugin (default:
        ``AIOCORE_STRICT_PLUGINS``).
    :param plugins: extra ``(name, plugin object)`` pairs registered after the
        built-ins, as if they came from entry points (for tests and embedding).
    :param builtins: the built-in plugin names to load (default: all).
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        block: Iterable[str] | None = None,
        strict: bool | None = None,
        plugins: Iterable[tuple[str, object]] = (),
        builtins: Sequence[str] = BUILTIN_PLUGINS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        # Checked before anything loads: a str would be taken letter by letter.
        for arg, value in (("block", block), ("builtins", builtins)):
            if value is not None and (
                isinstance(value, str)
                or not isinstance(value, Iterable)
                or not all(isinstance(v, str) for v in value)
            ):
                raise TypeError(f"{arg} must be a list of plugin names (str), got {value!r}")
        plugins = list(plugins)
        for pair in plugins:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                raise TypeError(
                    f"plugins must be a list of (name, plugin object) pairs, got item {pair!r}"
                )
        if autoload is None:
            autoload = not _env_flag(env, "AIOCORE_DISABLE_PLUGIN_AUTOLOAD")
        if block is None:
            block = [b.strip() for b in env.get("AIOCORE_BLOCK_PLUGINS", "").split(",")]
        if strict is None:
            strict = _env_flag(env, "AIOCORE_STRICT_PLUGINS")
        self.strict = strict
        self.blocked = frozenset(b for b in block if b)
        self.pm = _Manager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspec)
        self.plugins: dict[str, PluginInfo] = {}
        self.backends: dict[str, BackendInfo] = {}
        self.notifiers: dict[str, NotifierInfo] = {}
        self.sources: dict[str, SourceInfo] = {}
        self._probes: dict[str, str | None] = {}
        self._probe_lock = threading.Lock()

        own = _own_dist()
        for name in builtins:
            module = f"{BUILTIN_PACKAGE}.{name}"
            self._load(name, module, own, True, functools.partial(importlib.import_module, module))
        for name, obj in plugins:
            self._load(
                name,
                getattr(obj, "__name__", repr(obj)),
                None,
                False,
                functools.partial(_identity, obj),
            )
        if autoload:
            for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                dist = _dist_label(getattr(ep, "dist", None))
                self._load(ep.name, ep.value, dist, False, ep.load)

    # -- loading ------------------------------------------------------------

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None) -> None:
        info.status = "failed"
        info.error = message
        if self.strict:
            raise PluginError(f"{message} (AIOCORE_STRICT_PLUGINS is set)") from exc
        warnings.warn(f"aiocore: {message}; the plugin is skipped", PluginWarning, stacklevel=4)

    def _load(
        self,
        name: str,
        module: str,
        dist: str | None,
        builtin: bool,
        load: Callable[[], object],
    ) -> None:
        info = PluginInfo(name=name, module=module, dist=dist, builtin=builtin)
        if name in self.plugins:
            # Blocking by name cannot tell the two apart, so the first (a
            # built-in, or the entry point sorted first) stays and this one is
            # skipped like any other broken plugin.
            other = self.plugins[name]
            message = (
                f"two plugins are named {name!r}: {other.module} ({other.dist}) and "
                f"{module} ({dist}); rename the second's entry point or uninstall it"
            )
            if self.strict:
                raise PluginError(f"{message} (AIOCORE_STRICT_PLUGINS is set)")
            warnings.warn(
                f"aiocore: {message}; the second is skipped", PluginWarning, stacklevel=3
            )
            return
        self.plugins[name] = info
        if name in self.blocked:
            info.status = "blocked"
            self.pm.set_blocked(name)
            return
        where = f"plugin {name!r} ({module}{', ' + dist if dist else ''})"
        try:
            plugin = load()
        except Exception as exc:
            self._fail(info, f"{where} failed to import: {type(exc).__name__}: {exc}", exc)
            return
        if self.pm.is_registered(plugin):
            # One module under two names: pluggy refuses the second, and its
            # hooks would run once anyway.  The first registration stays.
            self._fail(
                info, f"{where} is the same object as plugin {self.pm.get_name(plugin)!r}", None
            )
            return
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.get_plugin(name) is plugin:
                self.pm.unregister(name=name)
            self._fail(info, f"{where} is invalid: {exc}", exc)
            return
        staged: list[tuple[str, Registrar]] = []
        for kind, hook in (
            ("backend", "aiocore_register_backends"),
            ("notifier", "aiocore_register_notifiers"),
            ("source", "aiocore_register_sources"),
        ):
            registrar = Registrar(kind, name)
            try:
                self._call_one(plugin, hook, register=registrar)
            except Exception as exc:
                self.pm.unregister(name=name)
                self._fail(info, f"{where} raised in {hook}: {type(exc).__name__}: {exc}", exc)
                return
            staged.append((kind, registrar))
        self._commit(staged, info)

    def _call_one(self, plugin: object, hook: str, **kwargs: Any) -> None:
        """Call one plugin's implementation of *hook*, if it has one."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin is plugin:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})

    def _table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "backend": self.backends,
            "notifier": self.notifiers,
            "source": self.sources,
        }
        return tables[kind]

    def _commit(self, staged: list[tuple[str, Registrar]], info: PluginInfo) -> None:
        """Add everything one plugin registered, or nothing if a name clashes."""
        for kind, registrar in staged:
            table = self._table(kind)
            for name, _obj in registrar.items:
                if name in table:
                    other = table[name]
                    raise PluginError(
                        f"{kind} {name!r} is registered by two plugins: {other.plugin!r} "
                        f"({other.dist}) and {info.name!r} ({info.dist}); block one with "
                        f"AIOCORE_BLOCK_PLUGINS={info.name} (or ={other.plugin})"
                    )
        for kind, registrar in staged:
            table = self._table(kind)
            for name, obj in registrar.items:
                if kind == "backend":
                    table[name] = BackendInfo(name, obj, info.name, info.dist)
                elif kind == "notifier":
                    table[name] = NotifierInfo(name, obj, info.name, info.dist)
                else:
                    table[name] = SourceInfo(name, obj, info.name, info.dist)
                info.provides.append(f"{kind}:{name}")

    # -- backends -----------------------------------------------------------

    def probe(self, name: str) -> str | None:
        """Return why backend *name* cannot run here, or ``None``; cached."""
        with self._probe_lock:
            if name not in self._probes:
                try:
                    self._probes[name] = self.backends[name].cls.probe()
                except Exception as exc:
                    self._probes[name] = f"its probe raised {type(exc).__name__}: {exc}"
            return self._probes[name]

    def check_backend_names(self, names: Sequence[str]) -> None:
        """Raise :class:`UnknownBackendError` for a name no plugin registered."""
        for name in names:
            if name not in self.backends:
                known = ", ".join(sorted(self.backends)) or "(none registered)"
                failed = [p for p in self.plugins.values() if p.status == "failed"]
                if name in self.blocked:
                    hint = f" (plugin {name!r} is blocked by AIOCORE_BLOCK_PLUGINS)"
                elif any(p.name == name for p in failed):
                    hint = f" (plugin {name!r} did not load: {self.plugins[name].error})"
                elif failed:
                    # It may be one of theirs: a CLI hides the load warnings.
                    names = ", ".join(repr(p.name) for p in failed)
                    hint = f" (plugins that did not load: {names}; see 'aiocore plugins')"
                else:
                    hint = ""
                raise UnknownBackendError(
                    f"unknown backend {name!r}{hint}; known backends: {known}"
                )

    def open_backend(
        self,
        names: Sequence[str],
        options: Callable[[str], Mapping[str, Any]],
        log_to: Callable[[str], None],
        info_to: Callable[[str], None] | None = None,
    ) -> Backend:
        """Create the first available backend of *names*.

        *log_to* receives the backend's warnings, *info_to* (default:
        *log_to*) its routine notes (:class:`~aiocore.backend.BackendSetup`).

        Raises :class:`UnknownBackendError` for an unregistered name and
        :class:`BackendUnavailable` (with every reason) if none can run.
        ``OSError`` from a backend's constructor (EMFILE) propagates as is:
        running out of descriptors is not a reason to try another mechanism.
        """
        self.check_backend_names(names)
        reasons: dict[str, str] = {}
        for name in names:
            reason = self.probe(name)
            if reason is not None:
                reasons[name] = reason
                continue
            opts = options(name)
            setup = BackendSetup(
                options=opts,
                open=lambda other: self.open_backend([other], options, log_to, info_to),
                log=log_to,
                info=info_to,
            )
            info = self.backends[name]
            try:
                return info.cls(setup)
            except (OSError, BackendUnavailable, PluginError):
                raise
            except Exception as exc:
                # A bug or refusal inside a plugin: name it, as loading does.
                raise PluginError(
                    f"backend {name!r} (plugin {info.plugin!r}, {info.dist}) failed to start: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        detail = "; ".join(f"{n}: {r}" for n, r in reasons.items())
        if len(names) == 1:
            message = f"backend {names[0]!r} is not available here: {detail}"
        else:
            message = f"none of the backends {list(names)} is available here: {detail}"
        raise BackendUnavailable(message, reasons)

    # -- notifiers ----------------------------------------------------------

    def notifier_class(self, kind: str | None = None) -> type[EventNotifier]:
        """The :class:`EventNotifier` implementation named *kind*, or the preferred one."""
        if kind is not None:
            if not isinstance(kind, str):
                raise TypeError(f"kind must be a str, got {type(kind).__name__} {kind!r}")
            info = self.notifiers.get(kind)
            if info is None:
                known = ", ".join(sorted(self.notifiers)) or "(none registered)"
                raise ValueError(f"unknown notifier kind {kind!r}; known kinds: {known}")
            reason = info.cls.probe()
            if reason is not None:
                raise BackendUnavailable(
                    f"notifier kind {kind!r} is not available here: {reason}", {kind: reason}
                )
            return info.cls
        candidates = sorted(self.notifiers.values(), key=lambda i: -i.cls.preference)
        reasons = {}
        for info in candidates:
            reason = info.cls.probe()
            if reason is None:
                return info.cls
            reasons[info.name] = reason
        raise BackendUnavailable(
            "no EventNotifier implementation is available "
            f"(is the built-in 'notifier' plugin blocked?): {reasons or 'none registered'}",
            reasons,
        )

    # -- context lifecycle -------------------------------------------------

    def call_lifecycle(self, hook: str, ctx: AioContext) -> None:
        """Call *hook* on every plugin, attributing and containing failures."""
        caller = getattr(self.pm.hook, hook)
        first: PluginError | None = None
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(ctx=ctx)
            except Exception as exc:
                message = (
                    f"plugin {impl.plugin_name!r} raised in {hook}: {type(exc).__name__}: {exc}"
                )
                if not self.strict:
                    log.warning("%s", message, exc_info=exc)
                elif first is None:
                    # Strict mode raises, but only after every plugin had its
                    # hook: one plugin's failure must not skip another's
                    # aiocore_context_closing (its resources would leak).
                    first = PluginError(message)
                    first.__cause__ = exc
                else:
                    log.error("%s", message, exc_info=exc)
        if first is not None:
            raise first


_default: PluginRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> PluginRegistry:
    """The process's registry, loaded on first use from the environment."""
    global _default
    registry = _default
    if registry is None:
        with _default_lock:
            if _default is None:
                _default = PluginRegistry()
            registry = _default
    return registry


def reset_default_registry() -> None:
    """Forget the process's registry so the next use reloads plugins (tests)."""
    global _default
    with _default_lock:
        _default = None
