"""`fetchdeliver oauth2 authorize ACCOUNT`: obtain an OAuth2 refresh token from the first login.

Two grants, both without an outside helper script:

- the device authorization grant (RFC 8628): fetchdeliver shows a URL and a code; the user opens it
  on any device, signs in and enters the code, while fetchdeliver polls the token endpoint
  (honouring `interval` and `slow_down`). Microsoft supports it for mail; Google does not allow the
  Gmail scope in it.
- the authorization code grant with a loopback redirect and PKCE (RFC 8252, RFC 7636 S256):
  fetchdeliver listens on 127.0.0.1 on a port the kernel picks, prints (and opens) the provider's
  URL, and receives the code when the browser is redirected back; `state` is checked.

The refresh token is then handed to `oauth2_token_store_command` on its standard input, or written
(mode 0600, atomically) to the account's file in the state directory, where the refresh-token flow
(fetchdeliver.sources.credentials.OAuth2Flow) finds it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sys
import time

from fetchdeliver.sources.accounts import Account
from fetchdeliver.sources.credentials import SecretError
from fetchdeliver.errors import EX_CONFIG, EX_OK, EX_USAGE, ConfigError, FetchdeliverError

EX_FAILED = 1
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class AuthorizeError(FetchdeliverError):
    """The authorization did not complete (denied, expired, the endpoint refused)."""


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) as RFC 7636 section 4 defines them."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _post(url: str, form: dict, timeout: float) -> tuple[int, dict]:
    """POST a form, return (HTTP status, JSON object); errors with a body are returned, not raised."""
    import urllib.error
    import urllib.parse
    import urllib.request

    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise AuthorizeError(f"{url} unreachable: {getattr(e, 'reason', e)}") from None
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise AuthorizeError(f"{url} answered HTTP {status} without JSON: {body[:200]!r}") from None
    if not isinstance(data, dict):
        raise AuthorizeError(f"{url} answered {data!r}")
    return status, data


def _describe(data: dict) -> str:
    return " ".join(str(data[k]) for k in ("error", "error_description") if data.get(k)) or json.dumps(data)


class Authorizer:
    """One authorization of one account."""

    def __init__(self, account: Account, *, out=None, open_browser: bool = True, timeout: float = 600.0) -> None:
        self.account = account
        t = account.oauth2_table()
        self.ep = account.oauth2_endpoints()
        self.client_id = t.get("oauth2_client_id")
        self.client_secret = t.get("oauth2_client_secret")
        self.scope = t.get("oauth2_scope", self.ep.get("scope", ""))
        self.out = out if out is not None else sys.stdout
        self.open_browser = open_browser
        self.timeout = timeout

    def _say(self, text: str) -> None:
        print(text, file=self.out)
        self.out.flush()

    def _client(self, form: dict) -> dict:
        form["client_id"] = self.client_id
        if self.client_secret:
            form["client_secret"] = self.client_secret
        return form

    # -- RFC 8628 ---------------------------------------------------------------------------
    def device(self) -> dict:
        url = self.ep.get("device_url")
        if not url:
            raise AuthorizeError("no device authorization endpoint: set oauth2_device_url (or use --method loopback)")
        status, data = _post(url, self._client({"scope": self.scope}), self.account.timeout)
        if status != 200 or "device_code" not in data:
            raise AuthorizeError(f"the device authorization endpoint {url} refused: HTTP {status}: {_describe(data)}")
        verify = data.get("verification_uri_complete") or data.get("verification_uri") or data.get("verification_url")
        self._say(f"To authorize fetchdeliver for account {self.account.name!r}, open {verify}")
        self._say(f"and enter the code: {data.get('user_code')}")
        interval = max(1.0, float(data.get("interval", 5)))
        deadline = time.monotonic() + min(self.timeout, float(data.get("expires_in", 900)))
        token_url = self.ep["token_url"]
        while True:
            time.sleep(interval)  # RFC 8628 3.5: poll no faster than the interval
            status, tok = _post(token_url, self._client({"grant_type": DEVICE_GRANT,
                                                         "device_code": data["device_code"]}),
                                self.account.timeout)
            if status == 200 and tok.get("access_token"):
                return tok
            error = tok.get("error")
            if error == "authorization_pending":
                pass
            elif error == "slow_down":
                interval += 5
            elif error in ("access_denied", "expired_token"):
                raise AuthorizeError(f"authorization {'denied' if error == 'access_denied' else 'expired'}: "
                                     f"{_describe(tok)}")
            else:
                raise AuthorizeError(f"the token endpoint {token_url} refused: HTTP {status}: {_describe(tok)}")
            if time.monotonic() > deadline:
                raise AuthorizeError("nobody entered the code in time; run the command again")

    # -- RFC 8252 + PKCE ------------------------------------------------------------------------
    def loopback(self) -> dict:
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, HTTPServer

        url = self.ep.get("authorize_url")
        if not url:
            raise AuthorizeError("no authorization endpoint: set oauth2_authorize_url (or use --method device)")
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        got: dict = {}
        done = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).items()}
                if "code" not in q and "error" not in q:
                    self.send_response(404)
                    self.end_headers()
                    return
                ok = q.get("state") == state and "code" in q
                text = ("fetchdeliver is authorized; you can close this window." if ok else
                        "fetchdeliver was not authorized: " + (q.get("error_description") or q.get("error")
                                                               or "the state did not match"))
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if not done.is_set():
                    got.update(q)
                    done.set()

        server = HTTPServer(("127.0.0.1", 0), Handler)
        redirect = f"http://127.0.0.1:{server.server_address[1]}/"
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect,
                  "scope": self.scope, "state": state, "code_challenge": challenge,
                  "code_challenge_method": "S256", **self.ep.get("extra", {})}
        link = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            self._say(f"To authorize fetchdeliver for account {self.account.name!r}, open this URL in a browser "
                      "on this machine:")
            self._say(link)
            if self.open_browser:
                try:
                    import webbrowser

                    webbrowser.open(link)
                except Exception:
                    pass  # the printed URL is enough
            if not done.wait(self.timeout):
                raise AuthorizeError(f"no answer from the browser within {self.timeout:.0f}s; run the command again")
        finally:
            server.shutdown()
            server.server_close()
        if "error" in got:
            raise AuthorizeError(f"authorization refused: {_describe(got)}")
        if got.get("state") != state:
            raise AuthorizeError("the redirect's state did not match (not the answer to this request); "
                                 "run the command again")
        token_url = self.ep["token_url"]
        status, tok = _post(token_url, self._client({"grant_type": "authorization_code", "code": got["code"],
                                                     "redirect_uri": redirect, "code_verifier": verifier}),
                            self.account.timeout)
        if status != 200 or not tok.get("access_token"):
            raise AuthorizeError(f"the token endpoint {token_url} refused the code: HTTP {status}: {_describe(tok)}")
        return tok

    # -- the result -----------------------------------------------------------------------------
    def store(self, tok: dict) -> str:
        """Keep the refresh token; returns where it went."""
        refresh = tok.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise AuthorizeError("the provider issued no refresh token (Google: it needs access_type=offline "
                                 "and prompt=consent, which the gmail preset sends; Microsoft: the "
                                 "offline_access scope)")
        command = self.account.oauth2_table().get("oauth2_token_store_command")
        if command:
            import subprocess

            r = subprocess.run(command, shell=True, input=(refresh + "\n").encode(), capture_output=True,
                               timeout=120)
            if r.returncode != 0:
                words = r.stderr.decode("utf-8", "replace").strip().splitlines()
                raise AuthorizeError(f"oauth2_token_store_command `{command}` failed with exit status "
                                     f"{r.returncode}" + (f": {words[-1]}" if words else ""))
            return f"oauth2_token_store_command `{command}`"
        path = self.account.refresh_token_file
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"account": self.account.name, "refresh_token": refresh, "token_url": self.ep["token_url"],
                       "scope": tok.get("scope", self.scope), "obtained": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        from fetchdeliver.delivery.fsio import fsync_dir

        try:
            fsync_dir(os.path.dirname(path))
        except OSError:
            pass
        return path


def main(args) -> int:
    """`fetchdeliver oauth2 authorize ACCOUNT [--method device|loopback] [--no-browser]`."""
    from fetchdeliver.sources.accounts import from_settings
    from fetchdeliver.config import load_settings, report_config_error

    if getattr(args, "oauth2_command", None) != "authorize":
        args.command_parser.print_help()
        return EX_OK
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        return report_config_error("fetchdeliver oauth2", e)
    path = settings.file
    by_name = {a.name: a for a in from_settings(settings)}
    account = by_name.get(args.account)
    if account is None:
        print(f"fetchdeliver oauth2: no account named {args.account!r} in {path} "
              f"(accounts: {', '.join(by_name) or 'none'})", file=sys.stderr)
        return EX_USAGE
    t = account.oauth2_table()
    if not any(k in t for k in ("oauth2_provider", "oauth2_authorize_url", "oauth2_device_url")):
        print(f"fetchdeliver oauth2: {path}: account[{list(by_name).index(account.name)}] ({account.name}): set "
              'oauth2_provider = "gmail" / "microsoft", or oauth2_authorize_url / oauth2_device_url, and '
              "oauth2_client_id", file=sys.stderr)
        return EX_CONFIG
    auth = Authorizer(account, open_browser=not args.no_browser, timeout=float(args.timeout))
    method = args.method
    if method is None:
        # Google does not allow the Gmail scope in the device grant: the browser redirect there.
        method = "device" if auth.ep.get("device_url") and t.get("oauth2_provider") != "gmail" else "loopback"
    try:
        tok = auth.device() if method == "device" else auth.loopback()
        where = auth.store(tok)
    except (AuthorizeError, SecretError) as e:
        print(f"fetchdeliver oauth2: {account.name}: {e}", file=sys.stderr)
        return EX_FAILED
    print(f"{account.name}: authorized; the refresh token is stored in {where}")
    return EX_OK


def add_arguments(p) -> None:
    """`fetchdeliver oauth2 authorize ...` (the registry in cli.py)."""
    osub = p.add_subparsers(dest="oauth2_command", metavar="COMMAND")
    oa = osub.add_parser("authorize", help="sign in once and store the account's OAuth2 refresh token")
    oa.add_argument("account", metavar="ACCOUNT")
    oa.add_argument("-c", "--config")
    oa.add_argument("--method", choices=("device", "loopback"),
                    help="device code (RFC 8628) or browser redirect to 127.0.0.1 with PKCE (RFC 8252); "
                         "default: device where the provider offers it for mail, else loopback")
    oa.add_argument("--no-browser", action="store_true", help="only print the URL (loopback)")
    oa.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the sign-in (default 600)")
