"""aiocore's built-in plugins, written exactly like third-party ones.

Each module here is one plugin, loaded under its short name (the module name)
by :class:`aiocore.PluginRegistry`: ``notifier`` (eventfd and pipe
``EventNotifier`` implementations), ``poll``, ``epoll``, ``io_uring`` and
``kqueue`` (poller backends) and ``auto`` (the poll-then-epoll policy).  The
core never imports these modules by any other route, so blocking one
(``AIOCORE_BLOCK_PLUGINS=epoll``) removes it completely.

A plugin quickstart, by example: a module with one hook implementation::

    import select
    from aiocore import hookimpl
    from aiocore.backend import Backend

    class MyBackend(Backend):
        name = "mine"
        def update(self, fd, old_mask, new_mask): ...
        def wait(self, timeout_ns): ...
        def close(self): ...

    @hookimpl
    def aiocore_register_backends(register):
        register(MyBackend)

declared in your distribution's ``pyproject.toml``::

    [project.entry-points.aiocore]
    mine = "mypackage.mybackend"
"""
