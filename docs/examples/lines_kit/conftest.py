import aiocore_lines
import pytest

import aiocore

pytest_plugins = ["aiocore.testing"]


@pytest.fixture(scope="session")
def aiocore_registry() -> aiocore.PluginRegistry:
    # The plugin is not installed: hand it to the registry directly.
    return aiocore.PluginRegistry(plugins=[("lines", aiocore_lines)], env={})
