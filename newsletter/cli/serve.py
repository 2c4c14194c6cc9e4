"""`newsletter serve`: the web app (and, beside it, the scheduler) under uvicorn.

Starlette and uvicorn are imported when the command runs, so `newsletter --help`
does not pay for them.
"""

from __future__ import annotations

import click

from newsletter.cli.common import CliError, reports_errors, settings_from
from newsletter.config import Settings
from newsletter.scheduling.schedules import load_schedules
from newsletter.service import Service

NO_KEY = "NEWSLETTER_SECRET_KEY is not set, so links in mails cannot be signed"
NO_KEY_HINT = (
    "Set it to a long random string (python -c 'import secrets; print(secrets.token_urlsafe(32))'),"
    " or pass --dev to try things out."
)


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: web.host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port to listen on (default: web.port, 8000)."
)
@click.option(
    "--dev",
    is_flag=True,
    help="Run without NEWSLETTER_SECRET_KEY: a per-run key is made, so mailed links die with the process.",
)
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Serve the web app only; do not start scheduled editions in this process.",
)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    help="Proxies trusted for X-Forwarded-For (the client address used by rate limits);"
    " overrides web.trusted_proxies (default: none).",
)
@click.pass_context
@reports_errors
def serve_command(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    dev: bool,
    no_scheduler: bool,
    forwarded_allow_ips: str | None,
) -> None:
    """Serve the subscriber web app: signup, confirm, unsubscribe, preferences, archive."""
    settings = settings_from(ctx)
    if forwarded_allow_ips is not None:
        settings = settings.replace("web", trusted_proxies=forwarded_allow_ips)
    if not no_scheduler:
        _check_schedules(settings)
    if not settings.site.secret_key and not dev:
        raise CliError(NO_KEY, NO_KEY_HINT)
    if not settings.site.secret_key:
        click.echo(
            "Warning: --dev without NEWSLETTER_SECRET_KEY: using a per-run key;"
            " links mailed now stop working on restart.",
            err=True,
        )
    service = Service(settings, dev_key=dev and not settings.site.secret_key)
    try:
        import uvicorn

        from newsletter.web.app import create_app
        from newsletter.web.server import uvicorn_options

        app = create_app(service, dev=dev, scheduler=not no_scheduler)
        host = host or settings.web.host
        port = port or settings.web.port
        click.echo(
            f"Serving {settings.site.name} on http://{host}:{port} (public address {settings.site.base_url})",
            err=True,
        )
        options = uvicorn_options(settings)  # connection caps, timeouts, trusted proxies (web.*)
        from newsletter.admin.mount import run_both, with_console

        site, console = with_console(
            app, service, dev=dev
        )  # the operator console: /admin, /api (off until a user exists)
        if console is not None:
            click.echo(
                f"Operator console on http://{settings.admin.host}:{settings.admin.port}/admin/", err=True
            )
            run_both(
                site,
                console,
                site_at=(host, port),
                console_at=(settings.admin.host, settings.admin.port),
                **options,
            )
            return
        uvicorn.run(site, host=host, port=port, log_level="info", server_header=False, **options)
    finally:
        service.close()


def _check_schedules(settings: Settings) -> None:
    """A bad schedule is an operator error: say so in one line now, not as a traceback from the lifespan."""
    load_schedules(settings)
