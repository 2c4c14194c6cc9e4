"""Sign-in, users, API tokens, the audit log, suppressions, settings and the console's assets."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.admin.accounts import ROLES, LoginRefused
from newsletter.admin.context import LOGIN_COOKIE, Refused, read_form
from newsletter.admin.pages.base import PAGE_SIZE, PageGroup, page_number, see_other
from newsletter.admin.security import client_of, same_origin
from newsletter.config import SECRET_KEYS, describe_keys


class AccountPages(PageGroup):
    async def login_form(
        self, request: Request, *, status: int = 200, error: str = "", email: str = ""
    ) -> Response:
        import secrets

        token = secrets.token_urlsafe(24)
        response = self.c.page(
            request,
            "login.html",
            signed=None,
            status=status,
            title="Sign in",
            login_token=token,
            error=error,
            email=email,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=3600,
            path="/admin/login",
            httponly=True,
            samesite="strict",
            secure=not self.c.dev,
        )
        return response

    async def login(self, request: Request) -> Response:
        if request.method != "POST":
            return await self.login_form(request)
        if not same_origin(request):
            raise Refused(403, "cross-site request refused", hint="Use the console's own sign-in form.")
        client = client_of(request)
        wait = self.c.login_limiter.hit(client)
        if wait:
            await run_in_threadpool(self.c.audit, request, "-", "login.limited")
            raise Refused(
                429,
                f"too many sign-in attempts from your address; try again in {int(wait // 60) + 1} minutes",
            )
        form = await read_form(request)
        token, cookie = str(form.get("login_token") or ""), request.cookies.get(LOGIN_COOKIE, "")
        if not token or token != cookie:
            raise Refused(
                403, "the sign-in form's security token is missing or stale", hint="Reload the sign-in page."
            )
        email, password = str(form.get("email") or "")[:320], str(form.get("password") or "")
        try:
            user = await run_in_threadpool(self.c.accounts.authenticate, email, password)
        except LoginRefused as exc:
            await run_in_threadpool(self.c.audit, request, email or "-", "login.failed", detail=exc.message)
            message = exc.message + (f" {exc.hint}" if exc.hint else "")
            return await self.login_form(
                request, status=401, error=message[:1].upper() + message[1:], email=email
            )
        cookie_value, _signed = await run_in_threadpool(
            self.c.accounts.start_session,
            user,
            client=client,
            previous=request.cookies.get(self.c.cookie_name),
        )
        await run_in_threadpool(self.c.audit, request, user.email, "login")
        response = see_other("/admin/")
        response.set_cookie(
            self.c.cookie_name,
            cookie_value,
            path="/",
            httponly=True,
            samesite="strict",
            secure=not self.c.dev,
        )
        response.delete_cookie(LOGIN_COOKIE, path="/admin/login")
        return response

    async def logout(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "viewer")
        await run_in_threadpool(self.c.accounts.end_session, request.cookies.get(self.c.cookie_name))
        await run_in_threadpool(self.c.audit, request, signed.operator.email, "logout")
        response = see_other("/admin/login")
        response.delete_cookie(
            self.c.cookie_name, path="/", secure=not self.c.dev, httponly=True, samesite="strict"
        )
        return response

    async def audit_log(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "admin")
        page = page_number(request)
        entries = await run_in_threadpool(
            self.store.accounts.audit_entries, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
        return self.c.page(
            request,
            "audit.html",
            signed=signed,
            title="Audit log",
            entries=entries[:PAGE_SIZE],
            page=page,
            more=len(entries) > PAGE_SIZE,
        )

    async def suppressions(self, request: Request) -> Response:
        """The suppression list: kept as hashes of mailboxes, so it can be checked, not read out."""
        signed = await self.c.signed_in(request, "admin")
        email = request.query_params.get("email", "")[:320].strip()
        status = await run_in_threadpool(self.store.suppressions.status_of, email) if email else None
        total = await run_in_threadpool(self.store.suppressions.count)
        totals = await run_in_threadpool(self.store.console.status_totals)
        return self.c.page(
            request,
            "suppressions.html",
            signed=signed,
            title="Suppression list",
            email=email,
            found=status,
            total=total,
            totals=totals,
        )

    async def settings_view(self, request: Request) -> Response:
        """Every configuration key's effective value; secrets only say whether they are set."""
        signed = await self.c.signed_in(request, "admin")
        settings = self.c.settings
        rows = []
        for key, variable, _default in describe_keys():
            section, name = key.split(".")
            value = getattr(getattr(settings, section), name)
            if (section, name) in SECRET_KEYS:
                value = "(set)" if value else "(not set)"
            rows.append((key, variable, str(value)))
        return self.c.page(request, "settings.html", signed=signed, title="Settings", rows=rows)

    async def users(self, request: Request) -> Response:
        signed = await self.c.signed_in(request, "admin")
        users = await run_in_threadpool(self.store.accounts.list_users)
        return self.c.page(request, "users.html", signed=signed, title="Users", users=users, roles=ROLES)

    async def create_user(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "admin")
        email, role = str(form.get("email") or "")[:320], str(form.get("role") or "viewer")
        user = await run_in_threadpool(
            self.c.accounts.create_user, email, role=role, password=str(form.get("password") or "")
        )
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "user.create", user.email, f"role {role}"
        )
        return see_other("/admin/users")

    async def change_role(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "admin")
        role = str(form.get("role") or "")
        user = await run_in_threadpool(self.c.accounts.set_role, request.path_params["user_id"], role)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "user.role", user.email, f"{user.role} -> {role}"
        )
        return see_other("/admin/users")

    async def tokens(self, request: Request, *, new_token: str = "") -> Response:
        signed = await self.c.signed_in(request)
        tokens = await run_in_threadpool(self.store.accounts.list_tokens, signed.operator.id)
        return self.c.page(
            request, "tokens.html", signed=signed, title="API tokens", tokens=tokens, new_token=new_token
        )

    async def create_token(self, request: Request) -> Response:
        signed, form = await self.c.posted(request, "viewer")
        name = str(form.get("name") or "token")[:100]
        token, token_id = await run_in_threadpool(self.c.accounts.issue_token, signed.operator, name)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "token.create", f"token #{token_id}", name
        )
        # Shown once, in this answer only (no redirect: a reload must not show it again).
        return await self.tokens(request, new_token=token)

    async def revoke_token(self, request: Request) -> Response:
        signed, _form = await self.c.posted(request, "viewer")
        token_id = request.path_params["token_id"]
        token = await run_in_threadpool(self.store.accounts.get_token, token_id)
        if token is None or (token.user_id != signed.operator.id and signed.operator.role != "admin"):
            raise Refused(404, f"no token #{token_id} of yours")
        await run_in_threadpool(self.store.accounts.revoke_token, token_id)
        await run_in_threadpool(
            self.c.audit, request, signed.operator.email, "token.revoke", f"token #{token_id}", token.name
        )
        return see_other("/admin/tokens")

    async def stylesheet(self, request: Request) -> Response:
        css = self.c.env.get_template("admin/console.css").render(site=self.c.settings.site)
        return Response(css, media_type="text/css")

    async def script(self, request: Request) -> Response:
        js = self.c.env.get_template("admin/console.js").render()
        return Response(js, media_type="text/javascript")

    async def root(self, request: Request) -> Response:
        return see_other("/admin/")
