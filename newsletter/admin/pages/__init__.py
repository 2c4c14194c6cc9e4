"""The console's pages, one module per thing they serve; ``admin.console`` lists their routes.

``base`` is what every group of pages shares; ``editions`` the dashboard and the
editions, ``sending`` send now, preview and the test send, ``readers`` the readers,
``imports`` the import by upload, ``accounts`` sign-in, users, tokens and the admin views.
Every handler starts with a guard from ``Console`` (``signed_in`` for pages,
``posted`` for forms) and every POST ends in an audit entry and a 303 redirect.
Blocking work runs in Starlette's thread pool.
"""
