import socket

import aiocore_select

import aiocore

registry = aiocore.PluginRegistry(plugins=[("select", aiocore_select)])
a, b = socket.socketpair()
got: list[bytes] = []
with aiocore.AioContext(backend="select", registry=registry) as ctx:
    ctx.set_fd_handler(b, lambda s: got.append(s.recv(100)), opaque=b)
    a.send(b"hello")
    while not got:
        ctx.poll(True)
    ctx.set_fd_handler(b, None)
    print(ctx.backend_name, got)
a.close()
b.close()
