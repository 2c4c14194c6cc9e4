"""The console's routes: every page under /admin, served by the groups in ``admin.pages``."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from newsletter.admin.context import Console
from newsletter.admin.pages.accounts import AccountPages
from newsletter.admin.pages.editions import EditionPages
from newsletter.admin.pages.imports import ImportPages
from newsletter.admin.pages.readers import ReaderPages
from newsletter.admin.pages.sending import SendingPages


def console_routes(console: Console) -> list[BaseRoute]:
    accounts, editions, sending = AccountPages(console), EditionPages(console), SendingPages(console)
    readers, imports = ReaderPages(console), ImportPages(console)
    return [
        Route("/", accounts.root, methods=["GET"]),
        Route("/admin", accounts.root, methods=["GET"]),
        Route("/admin/", editions.dashboard, methods=["GET"]),
        Route("/admin/login", accounts.login, methods=["GET", "POST"]),
        Route("/admin/logout", accounts.logout, methods=["POST"]),
        Route("/admin/progress.json", editions.progress, methods=["GET"]),
        Route("/admin/editions", editions.editions, methods=["GET"]),
        Route("/admin/editions/{edition_id:int}", editions.edition, methods=["GET"]),
        Route(
            "/admin/editions/{edition_id:int}/variants/{variant_id:int}", editions.variant, methods=["GET"]
        ),
        Route(
            "/admin/editions/{edition_id:int}/variants/{variant_id:int}/frame",
            editions.variant_frame,
            methods=["GET"],
        ),
        Route("/admin/editions/{edition_id:int}/pause", editions.pause, methods=["POST"]),
        Route("/admin/editions/{edition_id:int}/resume", editions.resume, methods=["POST"]),
        Route("/admin/send", sending.send_form, methods=["GET"]),
        Route("/admin/send", sending.send, methods=["POST"]),
        Route("/admin/readers", readers.readers, methods=["GET"]),
        Route("/admin/readers/add", readers.add_reader, methods=["POST"]),
        Route("/admin/readers/{reader_id:int}", readers.reader, methods=["GET"]),
        Route("/admin/readers/{reader_id:int}/reactivate", readers.reactivate, methods=["POST"]),
        Route("/admin/readers/{reader_id:int}/remove", readers.remove, methods=["POST"]),
        Route("/admin/readers/{reader_id:int}/edit", readers.edit_reader, methods=["POST"]),
        Route("/admin/readers/export.csv", readers.export, methods=["GET"]),
        Route("/admin/suppressions", accounts.suppressions, methods=["GET"]),
        Route("/admin/settings", accounts.settings_view, methods=["GET"]),
        Route("/admin/preview", sending.preview, methods=["GET"]),
        Route("/admin/preview/frame", sending.preview_frame, methods=["GET"]),
        Route("/admin/preview/test", sending.test_send, methods=["POST"]),
        Route("/admin/import", imports.import_form, methods=["GET"]),
        Route("/admin/import/preview", imports.import_preview, methods=["POST"]),
        Route("/admin/import/run", imports.import_run, methods=["POST"]),
        Route("/admin/import/jobs/{job_id}.json", imports.import_job_json, methods=["GET"]),
        Route("/admin/import/jobs/{job_id}", imports.import_job, methods=["GET"]),
        Route("/admin/audit", accounts.audit_log, methods=["GET"]),
        Route("/admin/users", accounts.users, methods=["GET"]),
        Route("/admin/users/new", accounts.create_user, methods=["POST"]),
        Route("/admin/users/{user_id:int}/role", accounts.change_role, methods=["POST"]),
        Route("/admin/tokens", accounts.tokens, methods=["GET"]),
        Route("/admin/tokens/new", accounts.create_token, methods=["POST"]),
        Route("/admin/tokens/{token_id:int}/revoke", accounts.revoke_token, methods=["POST"]),
        Route("/admin/static/console.css", accounts.stylesheet, methods=["GET"]),
        Route("/admin/static/console.js", accounts.script, methods=["GET"]),
    ]
