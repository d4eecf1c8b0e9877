"""The plugin's tests use aiocore's kit: fixtures and conformance classes."""

pytest_plugins = ["aiocore.testing"]
