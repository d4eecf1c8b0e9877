import os

import aiocore_lines

import aiocore

registry = aiocore.PluginRegistry(plugins=[("lines", aiocore_lines)])
r, w = os.pipe()
lines: list[bytes | None] = []

with aiocore.AioContext(registry=registry) as ctx:
    ctx.sources.lines.watch(r, lines.append)  # LineReader(ctx) is made here
    os.write(w, b"first\nsecond\nthi")
    os.write(w, b"rd")
    os.close(w)
    while lines[-1:] != [None]:
        ctx.poll(True)

os.close(r)
print(lines)  # [b'first', b'second', b'third', None]
