import aiocore_socknotify

import aiocore

registry = aiocore.PluginRegistry(plugins=[("socknotify", aiocore_socknotify)])

e = aiocore.EventNotifier(kind="socketpair", registry=registry)
print(type(e).__name__, isinstance(e, aiocore.EventNotifier))
e.set()
print(e.test_and_clear(), e.test_and_clear())

with aiocore.AioContext(registry=registry) as ctx:
    ctx.set_event_notifier(e, lambda n: print("set:", n.test_and_clear()))
    e.set()
    ctx.poll(True)
    ctx.set_event_notifier(e, None)
e.close()
print(e.closed)
