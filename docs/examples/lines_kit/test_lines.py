"""The line reader's tests: aiocore's conformance kit, on every backend."""

import os

from aiocore.testing import SourceConformance


class TestLineReader(SourceConformance):
    source_name = "lines"
    owns_fds = False  # the caller owns the fds it hands to watch()

    def make_handle(self, source, tmp_path):
        r, w = os.pipe()
        source.watch(r, self.callback)  # self.callback records its calls
        return source, r, w

    def close_handle(self, handle):
        source, r, _w = handle
        source.unwatch(r)

    def release(self, handle):  # the caller's part: close its pipe
        _source, r, w = handle
        os.close(r)
        os.close(w)

    def trigger(self, handle):  # makes on_line() due
        _source, _r, w = handle
        os.write(w, b"a line\n")
