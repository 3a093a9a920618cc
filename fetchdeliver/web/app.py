"""The Starlette application: login, dashboard, deliveries, queue, rules.

Sessions are a cookie signed with itsdangerous (key in STATE_DIR/web-secret, 0600),
`HttpOnly`, `SameSite=Strict`, `Secure` over TLS. Each session carries a random
CSRF token; every POST must echo it (form field `csrf` or header `X-CSRF-Token`)
or gets 403. Without a logged-in session every page answers 303 to /login.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fetchdeliver.netlimits import LoginThrottle, LoginThrottled, login_throttle
from fetchdeliver.web import data as pagedata

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
COOKIE = "fd_session"


def _secret(state_dir: str) -> bytes:
    """The signing key, made once and kept (sessions survive a restart)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, "web-secret")
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    os.rename(path + ".tmp", path)
    return key


class Sessions:
    def __init__(self, key: bytes, lifetime: float, secure: bool) -> None:
        from itsdangerous import URLSafeTimedSerializer

        self.signer = URLSafeTimedSerializer(key, salt="fetchdeliver-web-session")
        self.lifetime = lifetime
        self.secure = secure

    def read(self, request: Request) -> dict:
        from itsdangerous import BadSignature

        raw = request.cookies.get(COOKIE)
        if not raw:
            return {}
        try:
            value = self.signer.loads(raw, max_age=int(self.lifetime))
        except BadSignature:
            return {}
        return value if isinstance(value, dict) else {}

    def write(self, response: Response, session: dict) -> None:
        response.set_cookie(COOKIE, self.signer.dumps(session), max_age=int(self.lifetime), httponly=True,
                            samesite="strict", secure=self.secure, path="/")


def build_app(cfg, daemon=None, throttle: LoginThrottle | None = None) -> Starlette:
    """The app; `throttle` holds back logins after failures (default: one from cfg's login_failure_* keys)."""
    from fetchdeliver.web import charts

    if throttle is None:
        throttle = login_throttle(cfg)

    settings = cfg.settings
    sessions = Sessions(_secret(settings.state_dir), cfg.session_lifetime, secure=not cfg.listen)
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")), autoescape=True)
    templates = Jinja2Templates(env=env)
    templates.env.filters["when"] = pagedata.when
    templates.env.filters["explain"] = pagedata.explain
    templates.env.globals["bars"] = charts.bars

    def session_of(request: Request) -> dict:
        s = sessions.read(request)
        if "csrf" not in s:
            s = {"csrf": secrets.token_urlsafe(24)}
        return s

    def render(request: Request, name: str, session: dict, **ctx) -> Response:
        ctx.update(user=session.get("u"), csrf=session["csrf"], page=name.split(".")[0])
        resp = templates.TemplateResponse(request, name, ctx)
        sessions.write(resp, session)
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                   "style-src 'self'; frame-ancestors 'none'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    async def csrf_ok(request: Request, session: dict) -> tuple[bool, dict]:
        form = {}
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("multipart/form-data"):
            form = dict(await request.form())
        elif ctype.startswith("application/json"):
            try:
                form = await request.json()
            except ValueError:
                form = {}
        given = request.headers.get("x-csrf-token") or str(form.get("csrf", ""))
        expected = session.get("csrf", "")
        return bool(expected) and hmac.compare_digest(given, expected), form

    def page(handler, *, post: bool = False):
        """Wrap a handler: 303 to /login without a user; 403 on a POST without its CSRF token."""
        async def endpoint(request: Request):
            session = sessions.read(request)
            user = session.get("u")
            if not user:
                return RedirectResponse("/login", status_code=303)
            form: dict = {}
            if post:
                ok, form = await csrf_ok(request, session)
                if not ok:
                    return PlainTextResponse("missing or wrong CSRF token", status_code=403)
            me = pagedata.Me(cfg, user, session.get("home", ""), session.get("mail"))
            return await handler(request, session, me, form)
        return endpoint

    # -- login -----------------------------------------------------------------------------
    async def login_form(request: Request):
        session = session_of(request)
        if session.get("u"):
            return RedirectResponse("/", status_code=303)
        return render(request, "login.html", session, error=None)

    async def login_post(request: Request):
        session = session_of(request)
        ok, form = await csrf_ok(request, sessions.read(request))
        if not ok:
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        user = str(form.get("user", "")).strip()
        password = str(form.get("password", ""))
        ip = request.client.host if request.client else None
        try:
            # Failed logins are answered late, longer after each (per address and user, netlimits).
            account = await throttle.attempt(
                ip, user, lambda: asyncio.to_thread(cfg.sieve.authenticate, user, password)) if user else None
        except LoginThrottled as e:
            resp = render(request, "login.html", session, error=str(e))
            resp.status_code = 429
            resp.headers["Retry-After"] = str(int(e.retry_after) + 1)
            return resp
        if account is None:
            log.info("web: failed login for %r from %s", user, ip or "?")
            resp = render(request, "login.html", session, error="Wrong user name or password.")
            resp.status_code = 401
            return resp
        # A new session (and CSRF token) at login: a token seen before login is not carried over.
        session = {"u": account.user, "csrf": secrets.token_urlsafe(24), "home": account.home or "",
                   "mail": account.mail, "uid": account.uid, "gid": account.gid}
        resp = RedirectResponse("/", status_code=303)
        sessions.write(resp, session)
        return resp

    async def logout(request, session, me, form):
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- pages -------------------------------------------------------------------------------
    async def dashboard(request, session, me, form):
        info = await asyncio.to_thread(pagedata.dashboard, me, daemon)
        return render(request, "dashboard.html", session, **info)

    async def deliveries(request, session, me, form):
        q = request.query_params
        filters = {k: q.get(k, "")[:200] for k in ("search", "sender", "subject", "folder")}
        rows = await asyncio.to_thread(pagedata.deliveries, me, filters)
        return render(request, "deliveries.html", session, rows=rows, filters=filters)

    async def queue(request, session, me, form):
        items, error = await asyncio.to_thread(pagedata.queue_items, me)
        return render(request, "queue.html", session, items=items, error=error,
                      done=request.query_params.get("done", ""))

    async def queue_retry(request, session, me, form):
        qid = request.path_params["qid"]
        done = await asyncio.to_thread(pagedata.queue_retry, me, qid, daemon)
        return RedirectResponse(f"/queue?done={done}", status_code=303)

    async def queue_remove(request, session, me, form):
        qid = request.path_params["qid"]
        done = await asyncio.to_thread(pagedata.queue_remove, me, qid)
        return RedirectResponse(f"/queue?done={done}", status_code=303)

    async def rules(request, session, me, form):
        info = await asyncio.to_thread(pagedata.rules, me)
        return render(request, "rules.html", session, saved=request.query_params.get("saved", ""), **info)

    async def rules_check(request, session, me, form):
        text = str(form.get("script", ""))
        errors = await asyncio.to_thread(pagedata.check_script, me, text)
        return JSONResponse({"ok": not errors, "errors": errors})

    async def rules_preview(request, session, me, form):
        text = str(form.get("script", ""))
        out = await asyncio.to_thread(pagedata.preview, me, text)
        return JSONResponse(out)

    async def rules_save(request, session, me, form):
        text = str(form.get("script", ""))
        errors, name = await asyncio.to_thread(pagedata.save_script, me, text)
        if errors:
            info = await asyncio.to_thread(pagedata.rules, me)
            info["text"] = text
            resp = render(request, "rules.html", session, saved="", save_errors=errors, **info)
            resp.status_code = 422
            return resp
        return RedirectResponse(f"/rules?saved={name}", status_code=303)

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", page(logout, post=True), methods=["POST"]),
        Route("/", page(dashboard), methods=["GET"]),
        Route("/deliveries", page(deliveries), methods=["GET"]),
        Route("/queue", page(queue), methods=["GET"]),
        Route("/queue/{qid}/retry", page(queue_retry, post=True), methods=["POST"]),
        Route("/queue/{qid}/remove", page(queue_remove, post=True), methods=["POST"]),
        Route("/rules", page(rules), methods=["GET"]),
        Route("/rules/check", page(rules_check, post=True), methods=["POST"]),
        Route("/rules/preview", page(rules_preview, post=True), methods=["POST"]),
        Route("/rules/save", page(rules_save, post=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.started = time.time()
    return app
