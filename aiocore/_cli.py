"""The ``aiocore`` command (also ``python -m aiocore``).

Subcommands:

``backends``
    every registered backend: available or the reason not, the plugin and
    distribution providing it, and what ``auto``/the configuration picks here.
``plugins``
    every plugin by the name ``AIOCORE_BLOCK_PLUGINS`` accepts, with its status
    and what it provides.
``info``
    where each setting was found (argument, environment, file, default) and
    what it resolves to.

Each takes ``--json`` for machines.  Further subcommands (``bench``, ``demo``)
are added by the modules that implement them, through :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._config import resolve
from ._errors import BackendUnavailable, ConfigError, PluginError, UnknownBackendError
from ._plugins import ENTRY_POINT_GROUP, PluginRegistry, PluginWarning, default_registry

__all__ = ["COMMANDS", "main"]

#: name -> (help, add_arguments, run); run(args, out) returns the exit status.
COMMANDS: dict[
    str,
    tuple[
        str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, TextIO], int]
    ],
] = {}


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def selection(registry: PluginRegistry) -> dict[str, Any]:
    """What a context created here with no argument would run on, and why.

    Makes the checks ``AioContext()`` makes, with the same helpers, so that
    an ``"error"`` here means ``AioContext()`` would raise: the names of the
    backends and the notifier, every backend's options (not only the
    selected one's), then opening the selected backend.
    """
    result: dict[str, Any] = {}
    try:
        cfg = resolve(registry=registry)
    except ConfigError as exc:
        return {"error": str(exc)}
    names = cfg.backend.value
    result["requested"] = names
    result["origin"] = cfg.backend.origin
    skipped: dict[str, str] = {}
    result["skipped"] = skipped
    try:
        # As AioContext() does: an unknown name is an error, not a skip.
        cfg.check_names(registry)
        options = {name: cfg.options_for(registry, name) for name in registry.backends}
        registry.notifier_class(cfg.notifier.value)
    except (ConfigError, UnknownBackendError, BackendUnavailable) as exc:
        result["error"] = str(exc)
        return result
    for name in names:
        reason = registry.probe(name)
        if reason is not None:
            skipped[name] = reason
            continue
        result["selected"] = name
        try:
            backend = registry.open_backend([name], options.__getitem__, lambda _m: None)
        except (OSError, BackendUnavailable, ConfigError, PluginError) as exc:
            result["error"] = f"{name} could not be opened: {exc}"
        else:
            try:
                result["runs_on"] = backend.name
                result["statistics"] = backend.statistics()
            finally:
                backend.close()
        break
    return result


def _cmd_backends(args: argparse.Namespace, out: TextIO) -> int:
    registry = default_registry()
    rows = []
    data = []
    for name, info in registry.backends.items():
        reason = registry.probe(name)
        data.append(
            {
                "name": name,
                "available": reason is None,
                "reason": reason,
                "plugin": info.plugin,
                "distribution": info.dist,
            }
        )
        state = "available" if reason is None else f"unavailable: {reason}"
        rows.append((name, info.plugin, info.dist or "-", state))
    sel = selection(registry)
    missing = [
        {"plugin": p.name, "status": p.status, "error": p.error}
        for p in registry.plugins.values()
        if p.status != "loaded"
    ]
    # Exit 1 when a context created here would fail (AioContext() would raise).
    status = 1 if "error" in sel or "selected" not in sel else 0
    if args.json:
        json.dump(
            {"backends": data, "selection": sel, "plugins_not_loaded": missing},
            out,
            indent=2,
            default=str,
        )
        out.write("\n")
        return status
    _table([("BACKEND", "PLUGIN", "DISTRIBUTION", "STATUS"), *rows], out)
    out.write("\n")
    _write_selection(sel, out)
    for m in missing:
        detail = f": {m['error']}" if m["error"] else " (AIOCORE_BLOCK_PLUGINS)"
        out.write(f"plugin {m['plugin']!r} {m['status']}{detail}\n")
    return status


def _write_selection(sel: dict[str, Any], out: TextIO) -> None:
    for name, reason in sel.get("skipped", {}).items():
        out.write(f"skipped {name}: {reason}\n")
    if "error" in sel:
        # A new context would raise: never claim it "runs on" anything.
        if "selected" in sel:
            out.write(
                f"selection: {sel['selected']} (requested [{', '.join(sel['requested'])}] "
                f"by {sel['origin']}); a new context fails: {sel['error']}\n"
            )
        else:
            out.write(f"selection: error: {sel['error']}\n")
        return
    requested = ", ".join(sel["requested"])
    if "selected" not in sel:
        out.write(f"selection: none of [{requested}] ({sel['origin']}) is available here\n")
        return
    runs = sel.get("runs_on", sel["selected"])
    stats = sel.get("statistics") or {}
    # A composite backend describes its own plan (auto: when it upgrades).
    extra = f"; it {stats['policy']}" if stats.get("policy") else ""
    out.write(
        f"selection: {sel['selected']} (requested [{requested}] by {sel['origin']}); "
        f"a new context runs on {runs}{extra}\n"
    )
    if stats.get("choice"):
        out.write(f"why: {stats['choice']}\n")


def _cmd_plugins(args: argparse.Namespace, out: TextIO) -> int:
    registry = default_registry()
    data = [
        {
            "name": p.name,
            "status": p.status,
            "builtin": p.builtin,
            "module": p.module,
            "distribution": p.dist,
            "provides": p.provides,
            "error": p.error,
        }
        for p in registry.plugins.values()
    ]
    if args.json:
        json.dump({"plugins": data, "blocked": sorted(registry.blocked)}, out, indent=2)
        out.write("\n")
        return 0
    rows = [("PLUGIN", "STATUS", "ORIGIN", "DISTRIBUTION", "PROVIDES")]
    for p in registry.plugins.values():
        origin = "built-in" if p.builtin else f"entry point ({ENTRY_POINT_GROUP})"
        rows.append((p.name, p.status, origin, p.dist or "-", ", ".join(p.provides) or "-"))
    _table(rows, out)
    for p in registry.plugins.values():
        if p.error:
            out.write(f"\n{p.name}: {p.error}\n")
    out.write(
        "\nBlock a plugin by the name in the first column: AIOCORE_BLOCK_PLUGINS=name1,name2\n"
    )
    return 0


def _cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    registry = default_registry()
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("AIOCORE_")}
    try:
        cfg = resolve(registry=registry)
    except ConfigError as exc:
        if args.json:
            json.dump({"error": str(exc), "environment": env}, out, indent=2)
            out.write("\n")
        else:
            out.write(f"configuration error: {exc}\n")
        return 1
    sel = selection(registry)
    settings: dict[str, dict[str, Any]] = {
        "backend": {"value": cfg.backend.value, "origin": cfg.backend.origin},
        "notifier": {"value": cfg.notifier.value, "origin": cfg.notifier.origin},
    }
    for key, setting in cfg.poll.items():
        settings[key] = {"value": setting.value, "origin": setting.origin}
    options: dict[str, Any] = {}
    for name in registry.backends:
        values: dict[str, Any]
        try:
            values = cfg.options_for(registry, name)
        except ConfigError as exc:
            values = {"error": str(exc)}
        if values:
            origin = cfg.backend_options[name].origin if name in cfg.backend_options else "default"
            options[name] = {"values": values, "origin": origin}
    config_file = str(cfg.file.path) if cfg.file else None
    # As ``backends``: exit 1 when a context created here would fail.
    status = 1 if "error" in sel or "selected" not in sel else 0
    if args.json:
        json.dump(
            {
                "config_file": config_file,
                "environment": env,
                "settings": settings,
                "backend_options": options,
                "selection": sel,
            },
            out,
            indent=2,
            default=str,
        )
        out.write("\n")
        return status
    out.write(
        f"config file: {config_file or 'none found (searched from the current directory up)'}\n"
    )
    out.write(
        "environment: "
        + (", ".join(f"{k}={v}" for k, v in env.items()) or "no AIOCORE_* variables")
        + "\n"
    )
    out.write("\nsettings (argument > environment > config file > default):\n")
    for key, s in settings.items():
        out.write(f"  {key} = {s['value']!r}  [{s['origin']}]\n")
    out.write("\nbackend options:\n")
    for name, o in options.items():
        shown = ", ".join(f"{k}={v!r}" for k, v in o["values"].items())
        out.write(f"  {name}: {shown}  [{o['origin']}]\n")
    out.write("\n")
    _write_selection(sel, out)
    return status


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


COMMANDS["backends"] = ("list backends and what would be selected here", _json_flag, _cmd_backends)
COMMANDS["plugins"] = ("list plugins by the names blocking accepts", _json_flag, _cmd_plugins)
COMMANDS["info"] = (
    "show where each setting came from and what it resolves to",
    _json_flag,
    _cmd_info,
)


def _load_extra_commands() -> None:
    # Commands implemented in modules that need more than the core (the
    # benchmark harness, the demos) register themselves when imported.
    for module in ("aiocore.bench", "aiocore.demo", "aiocore.soak"):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = sys.stdout if out is None else out
    _load_extra_commands()
    parser = argparse.ArgumentParser(
        prog="aiocore",
        description="aiocore: QEMU's AioContext for Python, with pluggable backends.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return 2
    with warnings.catch_warnings():
        # The listings show failed plugins themselves; don't print them twice.
        warnings.simplefilter("ignore", PluginWarning)
        try:
            return COMMANDS[args.command][2](args, out)
        except (ConfigError, PluginError, UnknownBackendError, BackendUnavailable) as exc:
            sys.stderr.write(f"aiocore: error: {exc}\n")
            return 1
        except BrokenPipeError:
            # The reader (``| head``) went away; that is not our error.
            sys.stderr.close()
            return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
