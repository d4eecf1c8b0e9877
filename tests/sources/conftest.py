"""Source tests: let pytest rewrite the asserts of ``aiocore.testing``.

A test module here imports the kit's classes before its ``pytest_plugins``
loads the kit as a plugin, which would otherwise leave plain asserts.
"""

import pytest

pytest.register_assert_rewrite("aiocore.testing")
