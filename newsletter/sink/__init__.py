"""The local SMTP sink: receives, stores, checks and shows mail; injects provider faults.

Stands on its own (aiosmtpd, the stdlib, Starlette/uvicorn for the viewer, httpx for the
one-click action) and imports nothing else from `newsletter`, so it can test anything.

Import what you use from its modules: `server.SinkServer`, `message.StoredMessage`,
`checks.Check`, `faults.FaultRule`/`FaultSet`/`parse_fault_spec`, `errors.SinkError`.
This package module imports nothing, so that `newsletter.sink.pytest_plugin` (loaded by every
pytest run in the environment) stays cheap.
"""
