"""Configuration: file discovery, precedence, validation, and ``aiocore info``.

Each test runs in its own empty temporary directory (see conftest), so the
files written here are the only config in sight.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

import aiocore
from aiocore import ConfigError, PluginRegistry
from aiocore._cli import main
from aiocore._config import find_config_file, resolve
from aiocore.backend import Option


@pytest.fixture
def reg(registry: PluginRegistry) -> PluginRegistry:
    return registry


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_no_config_means_auto(tmp_path: Path, reg: PluginRegistry) -> None:
    cfg = resolve(registry=reg, env={})
    assert cfg.file is None
    assert cfg.backend.value == ["auto"]
    assert cfg.backend.origin == "default"
    assert all(s.value == 0 and s.origin == "default" for s in cfg.poll.values())


def test_pyproject_tool_table(tmp_path: Path, reg: PluginRegistry) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname="x"\n[tool.aiocore]\nbackend = "poll"\n'
        "poll_max_ns = 32768\n[tool.aiocore.backends.auto]\nepoll_threshold = 8\n",
    )
    cfg = resolve(registry=reg, env={})
    assert cfg.file is not None
    assert cfg.file.path == tmp_path / "pyproject.toml"
    assert cfg.backend.value == ["poll"]
    assert "pyproject.toml: key tool.aiocore.backend" in cfg.backend.origin
    assert cfg.poll["poll_max_ns"].value == 32768
    assert cfg.options_for(reg, "auto") == {"epoll_threshold": 8, "io_uring": "measured"}
    with aiocore.AioContext(registry=reg) as ctx:
        assert ctx.backend_name == "poll"
        assert ctx.poll_max_ns == 32768


def test_pyproject_without_table_means_defaults(tmp_path: Path, reg: PluginRegistry) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname="x"\n')
    cfg = resolve(registry=reg, env={})
    assert cfg.file is None
    assert cfg.backend.value == ["auto"]


def test_aiocore_toml_wins_over_pyproject_in_same_dir(tmp_path: Path, reg: PluginRegistry) -> None:
    write(tmp_path / "pyproject.toml", '[tool.aiocore]\nbackend = "poll"\n')
    write(tmp_path / "aiocore.toml", 'backend = "epoll"\n')
    assert resolve(registry=reg, env={}).backend.value == ["epoll"]


def test_search_goes_up_to_project_root(
    tmp_path: Path, reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pyproject.toml", '[tool.aiocore]\nbackend = "epoll"\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert resolve(registry=reg, env={}).backend.value == ["epoll"]
    # A nested project root stops the search: the parent's config does not leak in.
    write(tmp_path / "a" / "pyproject.toml", '[project]\nname="inner"\n')
    assert resolve(registry=reg, env={}).backend.value == ["auto"]


def test_aiocore_config_env_names_the_file(tmp_path: Path, reg: PluginRegistry) -> None:
    cfg_file = write(tmp_path / "elsewhere.toml", 'backend = ["io_uring", "epoll"]\n')
    write(tmp_path / "aiocore.toml", 'backend = "poll"\n')
    cfg = resolve(registry=reg, env={"AIOCORE_CONFIG": str(cfg_file)})
    assert cfg.backend.value == ["io_uring", "epoll"]
    with pytest.raises(
        ConfigError, match=r"AIOCORE_CONFIG='/nonexistent.toml' does not name a file"
    ):
        resolve(registry=reg, env={"AIOCORE_CONFIG": "/nonexistent.toml"})


def test_precedence_argument_env_file_default(
    tmp_path: Path, reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "aiocore.toml", 'backend = "poll"\npoll_max_ns = 100\n')
    assert resolve(registry=reg, env={}).backend.value == ["poll"]
    env = {"AIOCORE_BACKEND": "epoll"}
    cfg = resolve(registry=reg, env=env)
    assert cfg.backend.value == ["epoll"]
    assert cfg.backend.origin == "environment variable AIOCORE_BACKEND"
    cfg = resolve("auto", registry=reg, env=env, poll={"poll_max_ns": 5})
    assert cfg.backend.value == ["auto"]
    assert cfg.backend.origin == "argument backend="
    assert cfg.poll["poll_max_ns"].value == 5
    monkeypatch.setenv("AIOCORE_BACKEND", "epoll")
    with aiocore.AioContext(registry=reg) as ctx:
        assert ctx.backend_name == "epoll"
        assert ctx.poll_max_ns == 100
    with aiocore.AioContext("poll", registry=reg, poll_max_ns=7) as ctx:
        assert ctx.backend_name == "poll"
        assert ctx.poll_max_ns == 7


def test_env_list_takes_first_available(
    reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOCORE_BACKEND", "kqueue, epoll")
    with aiocore.AioContext(registry=reg) as ctx:
        assert ctx.backend_name == "epoll"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("backend = 3\n", r"aiocore.toml: key backend: must be a backend name or a list"),
        ("backend = []\n", r"key backend: must name at least one backend"),
        ("colour = 1\n", r"key colour: unknown key; accepted keys: backend, notifier"),
        ("poll_max_ns = -1\n", r"key poll_max_ns: must be an integer >= 0"),
        ("poll_grow = 1.5\n", r"key poll_grow: must be an integer >= 0"),
        ("backends = 1\n", r"key backends: must be a table of tables"),
        ("backend = [\n", r"aiocore.toml: not valid TOML"),
        (
            "[backends.auto]\nepoll_threshold = 0\n",
            r"key backends.auto.epoll_threshold: option 'epoll_threshold' must be >= 1",
        ),
        (
            "[backends.auto]\nepoll_threshold = true\n",
            r"key backends.auto.epoll_threshold: option 'epoll_threshold' must be int",
        ),
        ("[backends.auto]\nthreshold = 3\n", r"backend 'auto' has no option 'threshold'"),
        ("[backends.nosuch]\nx = 1\n", r"no backend 'nosuch' is registered; known backends:"),
        # The kernel's limits (IORING_MAX_ENTRIES, IORING_MAX_CQ_ENTRIES), checked
        # before a ring is made, for whichever backend is selected; ctypes would
        # silently truncate 4294967300 to a 4-entry ring.
        (
            "[backends.io_uring]\nentries = 100000\n",
            r"key backends.io_uring.entries: option 'entries' must be in 1..32768, got 100000",
        ),
        (
            'backend = "io_uring"\n[backends.io_uring]\nentries = 4294967300\n',
            r"key backends.io_uring.entries: option 'entries' must be in 1..32768, got 4294967300",
        ),
        (
            "[backends.io_uring]\nentries = 0\n",
            r"key backends.io_uring.entries: option 'entries' must be in 1..32768, got 0",
        ),
        (
            "[backends.io_uring]\ncq_entries = 65537\n",
            r"key backends.io_uring.cq_entries: option 'cq_entries' must be in 0..65536, got 65537",
        ),
    ],
)
def test_malformed_config_names_file_and_key(
    tmp_path: Path, reg: PluginRegistry, text: str, match: str
) -> None:
    write(tmp_path / "aiocore.toml", text)
    with pytest.raises(ConfigError, match=match):
        aiocore.AioContext(registry=reg)


def test_malformed_pyproject_key_names_tool_table(tmp_path: Path, reg: PluginRegistry) -> None:
    write(tmp_path / "pyproject.toml", "[tool.aiocore]\nbackend = 1\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: key tool.aiocore.backend"):
        aiocore.AioContext(registry=reg)


def test_bad_env_backend(reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOCORE_BACKEND", "nosuch")
    with pytest.raises(
        aiocore.UnknownBackendError, match=r"unknown backend 'nosuch'; known backends: "
    ):
        aiocore.AioContext(registry=reg)
    monkeypatch.setenv("AIOCORE_BACKEND", "poll,,epoll")
    with pytest.raises(
        ConfigError, match=r"AIOCORE_BACKEND: has an empty backend name \(item 2\)"
    ):
        aiocore.AioContext(registry=reg)
    monkeypatch.setenv("AIOCORE_BACKEND", " , ")
    with pytest.raises(ConfigError, match="AIOCORE_BACKEND: must name at least one backend"):
        aiocore.AioContext(registry=reg)


def test_unavailable_backend_gives_reason(reg: PluginRegistry) -> None:
    with pytest.raises(
        aiocore.BackendUnavailable, match=r"backend 'kqueue' is not available here: .*"
    ):
        aiocore.AioContext("kqueue", registry=reg)


def test_config_file_is_cached_until_changed(tmp_path: Path, reg: PluginRegistry) -> None:
    path = write(tmp_path / "aiocore.toml", 'backend = "poll"\n')
    first = find_config_file({})
    assert find_config_file({}) is first
    write(path, 'backend = "epoll"\n# changed size\n')
    second = find_config_file({})
    assert second is not first
    assert second is not None
    assert second.data["backend"] == "epoll"


def test_cache_tells_two_files_with_one_relative_name_apart(
    tmp_path: Path, reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative AIOCORE_CONFIG names another file in another directory.

    Same size and mtime (a copy with its times kept): the cache keyed on the
    path string returned the first file's settings for the second.
    """
    for sub, name in (("a", "poll"), ("b", "epol")):
        (tmp_path / sub).mkdir()
        path = write(tmp_path / sub / "aiocore.toml", f'backend = "{name}"\n')
        os.utime(path, ns=(1_700_000_000_000_000_000,) * 2)
    env = {"AIOCORE_CONFIG": "aiocore.toml"}
    monkeypatch.chdir(tmp_path / "a")
    assert resolve(registry=reg, env=env).backend.value == ["poll"]
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(aiocore.UnknownBackendError, match="unknown backend 'epol'"):
        resolve(registry=reg, env=env).check_names(reg)


def test_config_file_not_utf8_is_a_config_error(tmp_path: Path, reg: PluginRegistry) -> None:
    (tmp_path / "aiocore.toml").write_bytes(b'backend = "poll"\n# \xff\n')
    with pytest.raises(ConfigError, match=r"aiocore.toml: not valid TOML: not UTF-8"):
        find_config_file({})
    out = io.StringIO()
    assert main(["info"], out=out) == 1


def test_removed_working_directory_means_no_config_file(
    tmp_path: Path, reg: PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert find_config_file({}) is None
    with aiocore.AioContext("poll", registry=reg) as ctx:
        assert ctx.backend_name == "poll"


def test_notifier_kind_from_config(tmp_path: Path, reg: PluginRegistry) -> None:
    write(tmp_path / "aiocore.toml", 'notifier = "pipe"\n')
    with aiocore.AioContext("poll", registry=reg) as ctx:
        assert ctx._event.name == "pipe"
        assert not ctx.poll(False)
    write(tmp_path / "aiocore.toml", 'notifier = "carrier-pigeon"\n')
    with pytest.raises(
        ValueError, match="unknown notifier kind 'carrier-pigeon'; known kinds: eventfd, pipe"
    ):
        aiocore.AioContext("poll", registry=reg)


def test_info_shows_origins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[tool.aiocore]\nbackend = "poll"\npoll_grow = 4\n[tool.aiocore.backends.auto]\n'
        "epoll_threshold = 10\n",
    )
    monkeypatch.setenv("AIOCORE_BACKEND", "epoll")
    out = io.StringIO()
    assert main(["info", "--json"], out) == 0
    data = json.loads(out.getvalue())
    assert data["config_file"] == str(tmp_path / "pyproject.toml")
    # Every AIOCORE_* variable is shown (CI and the test session set others).
    assert data["environment"]["AIOCORE_BACKEND"] == "epoll"
    assert all(name.startswith("AIOCORE_") for name in data["environment"])
    assert data["settings"]["backend"] == {
        "value": ["epoll"],
        "origin": "environment variable AIOCORE_BACKEND",
    }
    assert data["settings"]["poll_grow"]["value"] == 4
    assert "pyproject.toml: key tool.aiocore.poll_grow" in data["settings"]["poll_grow"]["origin"]
    assert data["backend_options"]["auto"]["values"] == {
        "epoll_threshold": 10,
        "io_uring": "measured",
    }
    assert data["selection"]["selected"] == "epoll"

    out = io.StringIO()
    assert main(["info"], out) == 0
    text = out.getvalue()
    assert f"config file: {tmp_path / 'pyproject.toml'}" in text
    assert "backend = ['epoll']  [environment variable AIOCORE_BACKEND]" in text
    assert "selection: epoll" in text


def test_info_reports_config_error(tmp_path: Path) -> None:
    write(tmp_path / "aiocore.toml", "nonsense = 1\n")
    out = io.StringIO()
    assert main(["info"], out) == 1
    assert "configuration error:" in out.getvalue()
    assert "key nonsense: unknown key" in out.getvalue()


def test_io_uring_ring_sizes_up_to_the_kernel_limits_are_accepted(
    tmp_path: Path, reg: PluginRegistry
) -> None:
    write(tmp_path / "aiocore.toml", "[backends.io_uring]\nentries = 32768\ncq_entries = 65536\n")
    cfg = resolve(registry=reg, env={})
    opts = cfg.options_for(reg, "io_uring")
    assert (opts["entries"], opts["cq_entries"]) == (32768, 65536)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (Option(int, 1, "", minimum=1, maximum=8), 9, "option 'n' must be in 1..8, got 9"),
        (Option(int, 1, "", minimum=1, maximum=8), 0, "option 'n' must be in 1..8, got 0"),
        (Option(int, 1, "", maximum=8), 9, "option 'n' must be <= 8, got 9"),
        (Option(int, 1, "", minimum=1), 0, "option 'n' must be >= 1, got 0"),
    ],
)
def test_option_bounds_name_the_key_and_range(option: Option, value: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        option.check("n", value)
    assert str(info.value) == message
    assert option.check("n", 8 if option.maximum else 1) in (1, 8)
