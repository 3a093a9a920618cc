"""JMAP as a mail source (RFC 8620 core, RFC 8621 mail): `protocol = "jmap"` accounts.

The JSON is spoken directly over http.client (no client library: the few calls below are all a
fetch needs, and the TLS settings and pins of the account apply to every connection as for IMAP).

- Session discovery: GET `session_url`, by default `https://HOST[:PORT]/.well-known/jmap`
  (redirects followed, the Authorization header only to the same host); the API, download and
  EventSource URLs and the mail accountId come from the session resource.
- Auth: Basic (user + password / password_command) or Bearer (oauth2_token_command or the built-in
  OAuth2 refresh-token flow of accounts.py; a refused token is refreshed once).
- The watermark is the account's `Email` state after the last complete pass, kept in the state
  database (`jmap_sync`); a pass asks `Email/changes` since it, so a pass with nothing new costs one
  request. Without a watermark (first run, other folders, `cannotCalculateChanges`) the pass lists the
  folders with `Email/query`. Email ids are recorded, like POP3 UIDLs, once delivered.
- Bodies: `Email/get` gives blobId and size; the blob is downloaded as is, and the message delivered
  is exactly its bytes with our Received: header on top (`keep_crlf` defaults to true for JMAP).
- Exactly-once: the runner's safety order (sources/runner.py: pending row + token, durable delivery,
  record, then ack(): the `after` action with `Email/set`: `$seen`, destroy, or a move); the
  watermark moves only after a pass in which every message was delivered and acknowledged.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Iterable

from fetchdeliver.sources.base import SourceError, describe_os_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    import http.client
    from collections.abc import Hashable, Iterator, Sequence

    from fetchdeliver.sources.accounts import Account
    from fetchdeliver.sources.base import Fetched, Run

log = logging.getLogger("fetchdeliver.sources.jmap")

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
USING = [CORE, MAIL]

# A complete listing of the folders at least this often, even while Email/changes answers: the safety
# net for a server whose states went backwards (a restore), as the daily full comparison is for IMAP.
FULL_LISTING_EVERY = 24 * 3600

# Bodies per download batch, besides the account's batch_size: keep a batch's memory bounded.
BATCH_BYTES = 32 * 1024 * 1024
MAX_REDIRECTS = 5


class CannotCalculateChanges(SourceError):
    """The server cannot tell what changed since our state (too old): a full pass is needed."""


def expand(template: str, values: dict[str, str]) -> str:
    """RFC 6570 level-1 expansion of the session's URL templates (every value percent-encoded)."""
    from urllib.parse import quote

    out = template
    for k, v in values.items():
        out = out.replace("{" + k + "}", quote(v, safe=""))
    return out


class Session:
    """The parts of the JMAP session resource (RFC 8620 2) a fetch uses."""

    def __init__(self, data: Any, base_url: str) -> None:
        from urllib.parse import urljoin

        if not isinstance(data, dict):
            raise SourceError("JMAP session", "the session resource is not a JSON object")
        caps = data.get("capabilities") or {}
        if MAIL not in caps:
            raise SourceError("JMAP session", f"the server does not offer {MAIL} (capabilities: "
                              f"{', '.join(caps) or 'none'})", temporary=False)
        try:
            self.api_url = urljoin(base_url, data["apiUrl"])
            self.download_url = urljoin(base_url, data["downloadUrl"])
        except (KeyError, TypeError):
            raise SourceError("JMAP session", "the session resource has no apiUrl/downloadUrl") from None
        es = data.get("eventSourceUrl")
        self.event_source_url: str | None = urljoin(base_url, es) if isinstance(es, str) else None
        self.username: str = str(data.get("username", ""))
        self.state: str = str(data.get("state", ""))
        core = caps.get(CORE) or {}
        self.max_objects_in_get = _positive(core.get("maxObjectsInGet"), 500)
        self.max_objects_in_set = _positive(core.get("maxObjectsInSet"), 500)
        self.max_concurrent_requests = _positive(core.get("maxConcurrentRequests"), 4)
        account = (data.get("primaryAccounts") or {}).get(MAIL)
        accounts = data.get("accounts") or {}
        if not account:
            # Servers that leave out primaryAccounts (Cyrus 3.6): the one account with mail.
            mail = [k for k, v in accounts.items()
                    if isinstance(v, dict) and MAIL in (v.get("accountCapabilities") or {})]
            account = mail[0] if len(mail) == 1 else next(
                (k for k in mail if accounts[k].get("isPrimary")), None)
        if not account:
            raise SourceError("JMAP session", "no mail account in the session (primaryAccounts has no "
                              f"{MAIL})", temporary=False)
        self.account_id: str = str(account)
        self.read_only = bool((accounts.get(self.account_id) or {}).get("isReadOnly"))


def _positive(v: Any, default: int) -> int:
    return v if isinstance(v, int) and v > 0 else default


class JmapClient:
    """HTTP for one account: kept-alive connections, the account's TLS settings and pins, auth."""

    def __init__(self, account: "Account", parent: "JmapClient | None" = None) -> None:
        import threading

        self.account = account
        self._conns: dict[tuple[str, str, int], "http.client.HTTPConnection"] = {}
        self._used: set[tuple[str, str, int]] = set()   # connections that carried a request already
        self._auth: str | None = None                   # the Authorization value (secrets fetched once)
        self._parent = parent                           # clones ask their parent (one token refresh)
        self._auth_lock = threading.Lock()

    def clone(self) -> "JmapClient":
        """A client with its own connections and the same credentials (for another thread)."""
        return JmapClient(self.account, parent=self)

    def session_url(self) -> str:
        a = self.account
        if a.session_url:
            return a.session_url
        scheme = "http" if a.tls == "none" else "https"
        default = 80 if scheme == "http" else 443
        host = f"[{a.host}]" if ":" in a.host else a.host
        port = "" if a.port == default else f":{a.port}"
        return f"{scheme}://{host}{port}/.well-known/jmap"

    # -- auth -------------------------------------------------------------------------
    def authorization(self, *, refresh: bool = False, stale: str | None = None) -> str:
        """The Authorization header's value; `refresh`: the server refused `stale`, get a new token
        (unless another thread already did)."""
        if self._parent is not None:
            return self._parent.authorization(refresh=refresh, stale=stale)
        with self._auth_lock:
            if self._auth is not None and (not refresh or (stale is not None and stale != self._auth)):
                return self._auth
            return self._new_authorization(refresh)

    def _new_authorization(self, refresh: bool) -> str:
        from fetchdeliver.sources.credentials import SecretError

        a = self.account
        try:
            if a.uses_oauth2:
                self._auth = f"Bearer {a.access_token(refresh=refresh)}"
            else:
                user_pass = f"{a.user}:{a.password()}".encode()
                self._auth = "Basic " + base64.b64encode(user_pass).decode("ascii")
        except SecretError as e:
            raise SourceError("JMAP login", str(e), temporary=False) from None
        return self._auth

    # -- connections --------------------------------------------------------------------
    def connection(self, scheme: str, host: str, port: int, *, fresh: bool = False,
                    timeout: float | None = None) -> "http.client.HTTPConnection":
        import http.client

        key = (scheme, host, port)
        conn = None if fresh else self._conns.get(key)
        if conn is not None:
            return conn
        a = self.account
        t = a.timeout if timeout is None else timeout
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=t, context=a.ssl_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=t)
        conn.connect()
        if scheme == "https":
            from fetchdeliver.sources.tls import TLSPinError

            try:
                a.check_peer(conn.sock)
            except TLSPinError as e:
                conn.close()
                raise SourceError("JMAP connect", str(e), temporary=False) from None
        if not fresh:
            old = self._conns.pop(key, None)
            if old is not None:
                old.close()
            self._conns[key] = conn
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except OSError:
                pass
        self._conns.clear()
        self._used.clear()

    def request(self, method: str, url: str, *, command: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        """(status, final URL, body) of a request, redirects followed; SourceError on a failure."""
        from urllib.parse import urljoin, urlsplit

        first_host = urlsplit(url).hostname
        retried_auth = False
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SourceError(command, f"not an http(s) URL: {url!r}", temporary=False)
            hdrs = {"Accept-Encoding": "identity", "User-Agent": "fetchdeliver"}
            hdrs.update(headers or {})
            sent = None
            if parts.hostname == first_host:
                hdrs["Authorization"] = sent = self.authorization()
            status, location, data, resp_headers = self._send(method, url, parts, body, hdrs, command)
            if status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                if status == 303:
                    method, body = "GET", None
                continue
            if status == 401 and self.account.uses_oauth2 and not retried_auth:
                retried_auth = True
                self.authorization(refresh=True, stale=sent)   # the cached token may have been revoked
                continue
            if status >= 400:
                raise http_error(command, status, data, resp_headers)
            return status, url, data
        raise SourceError(command, f"more than {MAX_REDIRECTS} redirects (last to {url})")

    def _send(self, method: str, url: str, parts, body: bytes | None, headers: dict[str, str],
              command: str) -> tuple[int, str | None, bytes, Any]:
        import http.client

        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        for attempt in (0, 1):
            try:
                key = (parts.scheme, parts.hostname, port)
                conn = self.connection(*key)
                reused = key in self._used
                self._used.add(key)
                conn.request(method, path, body=body, headers=headers)
                quickack(conn.sock)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._drop(parts.scheme, parts.hostname, port)
                return resp.status, resp.getheader("Location"), data, resp.headers
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(parts.scheme, parts.hostname, port)
                if attempt == 0 and reused:
                    continue   # a kept-alive connection the server had closed meanwhile
                raise SourceError(command, f"connection lost ({describe_os_error(e)}) at {url}") from None
            except http.client.HTTPException as e:
                self._drop(parts.scheme, parts.hostname, port)
                raise SourceError(command, f"HTTP protocol error at {url}: {type(e).__name__}: {e}") from None
            except OSError as e:
                self._drop(parts.scheme, parts.hostname, port)
                import ssl

                permanent = isinstance(e, ssl.SSLCertVerificationError)
                raise SourceError(command, f"{describe_os_error(e)} ({parts.hostname}:{port})",
                                  temporary=not permanent) from None
        raise AssertionError("unreachable")

    def _drop(self, scheme: str, host: str, port: int) -> None:
        self._used.discard((scheme, host, port))
        conn = self._conns.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()


def quickack(sock) -> None:
    """Acknowledge the answer's first segment at once (Linux TCP_QUICKACK; reset by the kernel, so set
    before each response). A server that writes the headers and the body separately (Cyrus' httpd)
    otherwise has its body held back by Nagle's algorithm until our delayed ACK, 40 ms later: ten
    times the cost of a small blob download (measured by benchmarks/fetch_jmap.py)."""
    import socket

    opt = getattr(socket, "TCP_QUICKACK", None)
    if opt is not None and sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
        except OSError:
            pass


def http_error(command: str, status: int, data: bytes, headers: Any) -> SourceError:
    """A SourceError for an HTTP error answer, with the server's words (RFC 7807 problem details)."""
    detail = data.decode("utf-8", "replace").strip()
    try:
        j = json.loads(detail)
        if isinstance(j, dict):
            detail = " ".join(str(j[k]) for k in ("type", "title", "detail") if j.get(k)) or detail
    except ValueError:
        pass
    detail = " ".join(detail.split())[:300]
    words = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status == 401:
        return SourceError(command, f"login refused ({words})", temporary=False)
    if status == 403:
        return SourceError(command, f"access denied ({words})", temporary=False)
    retry = headers.get("Retry-After") if headers is not None else None
    wait = f" (Retry-After {retry})" if retry else ""
    # Worded so sources/throttle.py sees them: the daemon backs off the server as for IMAP.
    if status == 429:
        return SourceError(command, f"[THROTTLED] {words}{wait}")
    if status == 503:
        return SourceError(command, f"[UNAVAILABLE] {words}{wait}")
    return SourceError(command, words, temporary=status >= 500)


class JmapSource:
    """One JMAP account: session, API calls, blob downloads, and acknowledging fetched Emails."""

    def __init__(self, account: "Account") -> None:
        self.account = account
        self.http = JmapClient(account)
        self.session: Session | None = None
        self._mailboxes: list[dict] | None = None
        self.current: JmapPass | None = None   # the pass under way (batches())

    # -- session ------------------------------------------------------------------------
    def connect(self) -> None:
        url = self.http.session_url()
        _, final, data = self.http.request("GET", url, command="JMAP session",
                                           headers={"Accept": "application/json"})
        try:
            doc = json.loads(data)
        except ValueError:
            raise SourceError("JMAP session", f"{final} did not answer JSON (is it a JMAP session URL?)",
                              temporary=False) from None
        self.session = Session(doc, final)
        log.debug("%s: JMAP session at %s, account %s, API %s", self.account.name, final,
                  self.session.account_id, self.session.api_url)

    def close(self, *, quit: bool = True) -> None:
        self.http.close()

    # -- the Source protocol (sources/base.py) ------------------------------------------
    def batches(self, run: "Run") -> "Iterator[list[Fetched]]":
        return pass_batches(self, run)

    def ack(self, handles: "Sequence[Hashable]") -> None:
        """Delivered durably and recorded: the account's `after` (`$seen`, destroy, move)."""
        p = self.current
        if handles and p is not None:
            self.acknowledge([str(h) for h in handles], p.info, p.box_ids, p.move_to)

    def release(self, handles: "Sequence[Hashable]") -> None:
        """Not delivered: left as it is; the watermark stays where it was, so the next pass sees it again."""
        if handles and self.current is not None:
            self.current.released = True

    @property
    def account_id(self) -> str:
        return self._session().account_id

    def _session(self) -> Session:
        if self.session is None:
            raise SourceError("JMAP", "not connected")
        return self.session

    # -- API --------------------------------------------------------------------------
    def call(self, calls: list[tuple[str, dict]]) -> list[dict]:
        """Run method calls in one request; their responses' arguments, in order.

        A method-level error (RFC 8620 3.6.2) raises SourceError naming the method and the error type
        (CannotCalculateChanges for `cannotCalculateChanges`)."""
        out: list[dict] = []
        for r in self.call_each(calls):
            if isinstance(r, SourceError):
                raise r
            out.append(r)
        return out

    def call_each(self, calls: list[tuple[str, dict]]) -> list[dict | SourceError]:
        """As call(), but a method's error is returned in its place (the other answers are kept)."""
        s = self._session()
        request = {"using": USING,
                   "methodCalls": [[name, {"accountId": s.account_id, **args}, str(i)]
                                   for i, (name, args) in enumerate(calls)]}
        names = "+".join(dict.fromkeys(name for name, _ in calls))
        command = f"JMAP {names}"
        _, _, data = self.http.request("POST", s.api_url, command=command, body=json.dumps(request).encode(),
                                       headers={"Content-Type": "application/json",
                                                "Accept": "application/json"})
        try:
            doc = json.loads(data)
            responses = [r for r in doc["methodResponses"]
                         if isinstance(r, list) and len(r) == 3 and isinstance(r[1], dict)]
        except (ValueError, KeyError, TypeError):
            raise SourceError(command, "the server's answer is not a JMAP response") from None
        out: list[dict | SourceError] = []
        for i, (name, _) in enumerate(calls):
            match = [r for r in responses if r[2] == str(i)]
            error = next((args for rname, args, _ in match if rname == "error"), None)
            if error is not None:
                kind = str(error.get("type", "serverFail"))
                desc = error.get("description")
                text = kind + (f": {desc}" if desc else "")
                if kind == "cannotCalculateChanges":
                    out.append(CannotCalculateChanges(f"JMAP {name}", text))
                else:
                    out.append(SourceError(f"JMAP {name}", text, temporary=kind in (
                        "serverFail", "serverUnavailable", "serverPartialFail")))
                continue
            named = [args for rname, args, _ in match if rname == name]
            if not named:
                out.append(SourceError(f"JMAP {name}", "no response to this call"))
                continue
            out.append(named[0])
        return out

    # -- mailboxes ----------------------------------------------------------------------
    MAILBOX_GET = ("Mailbox/get", {"ids": None, "properties": ["name", "parentId", "role"]})

    def mailboxes(self, *, refresh: bool = False) -> list[dict]:
        if self._mailboxes is None or refresh:
            (res,) = self.call([self.MAILBOX_GET])
            self._keep_mailboxes(res)
        assert self._mailboxes is not None
        return self._mailboxes

    def _keep_mailboxes(self, res: dict) -> None:
        self._mailboxes = [m for m in res.get("list", []) if isinstance(m, dict) and "id" in m]

    def mailbox_paths(self) -> dict[str, str]:
        """Mailbox id -> its path, parents joined with "/" ("Archive/2024")."""
        boxes = {m["id"]: m for m in self.mailboxes()}

        def path(mid: str, depth: int = 0) -> str:
            m = boxes[mid]
            parent = m.get("parentId")
            name = str(m.get("name", ""))
            if isinstance(parent, str) and parent in boxes and depth < 50:
                return path(parent, depth + 1) + "/" + name
            return name
        return {mid: path(mid) for mid in boxes}

    def find_mailbox(self, name: str) -> str | None:
        """The id of a folder given as in the config: "INBOX" (the inbox role, any case), a path, a
        name, or a role ("archive", "trash", ...)."""
        paths = self.mailbox_paths()
        roles = {str(m.get("role") or "").lower(): m["id"] for m in self.mailboxes() if m.get("role")}
        if name.upper() == "INBOX" and "inbox" in roles:
            return roles["inbox"]
        for mid, p in paths.items():
            if p == name:
                return mid
        for mid, p in paths.items():
            if p.lower() == name.lower():
                return mid
        return roles.get(name.lower())

    def resolve_folders(self, names: list[str]) -> dict[str, str]:
        """Folder name -> mailbox id for every configured folder; SourceError if one does not exist."""
        out: dict[str, str] = {}
        for name in names:
            mid = self.find_mailbox(name)
            if mid is None:
                known = ", ".join(sorted(self.mailbox_paths().values())) or "none"
                raise SourceError("JMAP Mailbox/get", f"no mailbox {name!r} (mailboxes: {known})",
                                  temporary=False)
            out[name] = mid
        return out

    def ensure_mailbox(self, name: str) -> str:
        """The id of the `after = "move:NAME"` target, created (with its parents) if missing."""
        mid = self.find_mailbox(name)
        if mid is not None:
            return mid
        parent: str | None = None
        path = ""
        for part in [p for p in name.split("/") if p]:
            path = f"{path}/{part}" if path else part
            found = self.find_mailbox(path)
            if found is None:
                (res,) = self.call([("Mailbox/set", {"create": {"new": {"name": part, "parentId": parent}}})])
                created = (res.get("created") or {}).get("new")
                if not isinstance(created, dict) or "id" not in created:
                    why = (res.get("notCreated") or {}).get("new") or {}
                    raise SourceError("JMAP Mailbox/set", f"cannot create {path!r}: "
                                      f"{why.get('type', 'refused')} {why.get('description', '')}".strip())
                found = created["id"]
                self.mailboxes(refresh=True)
            parent = found
        assert parent is not None
        return parent

    # -- Emails ---------------------------------------------------------------------------
    def email_state(self) -> str:
        (res,) = self.call([("Email/get", {"ids": [], "properties": ["id"]})])
        return str(res.get("state", ""))

    def query(self, mailbox_ids: Iterable[str], page: int = 1024) -> list[str]:
        """Every Email id in the mailboxes, oldest first."""
        ids_in = list(mailbox_ids)
        if len(ids_in) == 1:
            flt: dict = {"inMailbox": ids_in[0]}
        else:
            flt = {"operator": "OR", "conditions": [{"inMailbox": m} for m in ids_in]}
        out: list[str] = []
        seen: set[str] = set()
        position = 0
        while True:
            (res,) = self.call([("Email/query", {"filter": flt, "sort": [{"property": "receivedAt",
                                                                        "isAscending": True}],
                                                 "position": position, "limit": page, "calculateTotal": True,
                                                 "collapseThreads": False})])
            ids = [i for i in res.get("ids", []) if isinstance(i, str)]
            for i in ids:
                if i not in seen:
                    seen.add(i)
                    out.append(i)
            position += len(ids)
            total = res.get("total")
            if not ids or (isinstance(total, int) and position >= total):
                return out

    def changes(self, since: str, max_changes: int = 4096) -> tuple[list[str], list[str], str]:
        """(created + updated ids, destroyed ids, new state) since `since`, every page of it."""
        changed: dict[str, None] = {}
        destroyed: dict[str, None] = {}
        state = since
        for _ in range(100000):
            call = ("Email/changes", {"sinceState": state, "maxChanges": max_changes})
            if self._mailboxes is None:
                # The folders ride along: a pass with nothing new costs one API request.
                boxes, res = self.call_each([self.MAILBOX_GET, call])
                if isinstance(boxes, SourceError):
                    raise boxes
                self._keep_mailboxes(boxes)
            else:
                (res,) = self.call_each([call])
            if isinstance(res, SourceError):
                if res.detail.startswith("invalidArguments") and state == since:
                    # The server does not know our state at all (Cyrus answers so for a state it never
                    # issued): as cannotCalculateChanges, the folders are listed instead.
                    raise CannotCalculateChanges(res.command, res.detail)
                raise res
            for key in ("created", "updated"):
                for i in res.get(key) or []:
                    changed[i] = None
            for i in res.get("destroyed") or []:
                destroyed[i] = None
                changed.pop(i, None)
            new = str(res.get("newState", state))
            if not res.get("hasMoreChanges") or new == state:
                return list(changed), list(destroyed), new
            state = new
        raise SourceError("JMAP Email/changes", "the server keeps announcing more changes")

    def details(self, ids: list[str]) -> dict[str, dict]:
        """Email id -> {blobId, size, mailboxIds, keywords}; ids the server no longer has are left out."""
        out: dict[str, dict] = {}
        step = self._session().max_objects_in_get
        for i in range(0, len(ids), step):
            (res,) = self.call([("Email/get", {"ids": ids[i:i + step],
                                               "properties": ["blobId", "size", "mailboxIds", "keywords"]})])
            for e in res.get("list", []):
                if isinstance(e, dict) and isinstance(e.get("id"), str) and isinstance(e.get("blobId"), str):
                    out[e["id"]] = e
        return out

    def download(self, blob_id: str, http: JmapClient | None = None) -> bytes:
        """The blob's bytes, exactly as the server has them (over `http`: another connection)."""
        s = self._session()
        url = expand(s.download_url, {"accountId": s.account_id, "blobId": blob_id, "name": "message.eml",
                                      "type": "message/rfc822"})
        _, _, data = (http or self.http).request("GET", url, command="JMAP download")
        return data

    def acknowledge(self, ids: list[str], info: dict[str, dict], source_boxes: set[str],
                    move_to: str | None = None) -> None:
        """The account's `after` for fetched (durably delivered) Emails: `$seen`, destroy or move."""
        a = self.account
        if not ids or a.after == "keep":
            return
        step = self._session().max_objects_in_set
        for i in range(0, len(ids), step):
            chunk = ids[i:i + step]
            if a.after == "delete":
                (res,) = self.call([("Email/set", {"destroy": chunk})])
                failed = res.get("notDestroyed") or {}
            else:
                update: dict[str, dict] = {}
                for eid in chunk:
                    if a.after == "mark-seen":
                        update[eid] = {"keywords/$seen": True}
                    else:
                        assert move_to is not None
                        boxes = dict((info.get(eid) or {}).get("mailboxIds") or {})
                        for b in source_boxes:
                            boxes.pop(b, None)
                        boxes[move_to] = True
                        update[eid] = {"mailboxIds": boxes}
                (res,) = self.call([("Email/set", {"update": update})])
                failed = res.get("notUpdated") or {}
            # notFound: gone already (destroyed or moved elsewhere meanwhile): nothing left to do.
            bad = {k: v for k, v in failed.items() if not (isinstance(v, dict) and v.get("type") == "notFound")}
            if bad:
                eid, why = next(iter(bad.items()))
                why = why if isinstance(why, dict) else {}
                raise SourceError("JMAP Email/set", f"{a.after} failed for {len(bad)} message(s), e.g. {eid}: "
                                  f"{why.get('type', 'refused')} {why.get('description') or ''}".strip())


# ---------------------------------------------------------------------------
# The Source protocol (sources/base.py): one pass, driven by sources/runner.AccountRun.

class JmapPass:
    """What one pass learned, for ack() and the watermark at its end."""

    def __init__(self) -> None:
        self.info: dict[str, dict] = {}
        self.box_ids: set[str] = set()
        self.move_to: str | None = None
        self.released = False


def pass_batches(src: JmapSource, run: "Run") -> "Iterator[list[Fetched]]":
    """The account's new messages in batches (JmapSource.batches); the watermark moves at the end of a
    pass in which nothing was released (every message delivered and acknowledged)."""
    from fetchdeliver.sources.base import Fetched

    a = src.account
    state = run.state
    dry = run.dry_run
    name = run.account_name
    p = src.current = JmapPass()
    point = None if dry else state.jmap_sync_point(name)
    news = None
    listed_at = point[3] if point is not None else 0.0
    if point is not None and point[0] == src.account_id and time.time() - listed_at < FULL_LISTING_EVERY:
        try:
            news = src.changes(point[2])   # the mailboxes come in the same request
        except CannotCalculateChanges as e:
            log.info("%s: %s; listing the folders instead", name, e)
    boxes = src.resolve_folders(list(a.folders))   # every folder: one Email state covers them all
    p.box_ids = box_ids = set(boxes.values())
    scope = ",".join(sorted(box_ids))
    if a.after == "move" and a.move_to and not dry:
        p.move_to = src.ensure_mailbox(a.move_to)
    seen = state.pop3_seen(name)   # Email ids already delivered (or skipped as duplicates)
    candidates: list[str] | None = None
    new_state = ""
    if point is not None and news is not None and point[1] == scope:
        changed, destroyed, new_state = news
        gone = seen & set(destroyed)
        if gone:
            state.pop3_forget(name, gone)
            seen -= gone
        if new_state == point[2] or not changed:
            log.debug("%s: unchanged since the last pass (Email state %s)", name, point[2])
            if new_state != point[2]:
                state.set_jmap_sync_point(name, (src.account_id, scope, new_state), at=listed_at)
            return
        candidates = changed
    if candidates is None:
        listed_at = time.time()
        new_state = src.email_state()   # before the listing: whatever comes later shows in the next changes
        present = src.query(box_ids)
        first = point is None and not seen
        if first and a.initial == "new-only":
            if not dry:
                state.complete(name, seen=[("", None, i) for i in present])
                state.set_jmap_sync_point(name, (src.account_id, scope, new_state), at=listed_at)
            log.info("%s: first run with initial = new-only: %d existing messages recorded, not fetched",
                     name, len(present))
            return
        if not dry and point is not None:
            # Recorded ids no longer in the folders: deleted or moved away (the duplicate memory still
            # knows their bytes, so one moved back is not delivered twice).
            gone = seen - set(present)
            if gone:
                state.pop3_forget(name, gone)
                seen -= gone
        candidates = present
    wanted = [i for i in candidates if i not in seen]
    redo_ids = [i for i in candidates if i in seen] if a.after != "keep" and not dry else []
    p.info = info = src.details(wanted + redo_ids)
    # Only what is in one of the account's folders (changes cover the whole JMAP account).
    mine = {i for i, e in info.items() if box_ids & {k for k, v in (e.get("mailboxIds") or {}).items() if v}}
    redo = [i for i in redo_ids if i in mine and not (a.after == "mark-seen" and
                                                   (info[i].get("keywords") or {}).get("$seen"))]
    if redo:
        # Recorded but still here: a run that stopped between recording and acting on the source.
        src.acknowledge(redo, info, box_ids, p.move_to)
    todo = [i for i in wanted if i in mine]
    run.expect(len(todo))
    with Downloads(src) as downloads:
        groups = list(_batches(todo, info, a.batch_size))
        pending = downloads.start(groups[0], info) if groups else []
        for k, group in enumerate(groups):
            bodies = [f.result() for f in pending]
            # The next batch downloads while this one is delivered (fsync-bound).
            pending = downloads.start(groups[k + 1], info) if k + 1 < len(groups) else []
            # Email ids are account-wide and never reused: recorded like UIDLs (uidvalidity None).
            yield [Fetched(eid, raw, eid) for eid, raw in zip(group, bodies)]
    if not dry and not p.released:
        # Complete, nothing left to retry: the next pass asks what changed since this state.
        state.set_jmap_sync_point(name, (src.account_id, scope, new_state), at=listed_at)


class Downloads:
    """Blob downloads on a few connections of their own (up to the server's maxConcurrentRequests, less
    one for the API calls), so downloading overlaps delivering. Results are taken in order."""

    MAX_WORKERS = 4

    def __init__(self, src: JmapSource) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.src = src
        s = src._session()
        workers = max(1, min(self.MAX_WORKERS, s.max_concurrent_requests - 1))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jmap-download")
        self.local = threading.local()
        self.clients: list[JmapClient] = []
        self.lock = threading.Lock()

    def _download(self, blob_id: str) -> bytes:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.src.http.clone()
            with self.lock:
                self.clients.append(client)
        return self.src.download(blob_id, client)

    def start(self, batch: list[str], info: dict[str, dict]) -> list:
        return [self.pool.submit(self._download, info[eid]["blobId"]) for eid in batch]

    def __enter__(self) -> "Downloads":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for c in self.clients:
            c.close()


def _batches(ids: list[str], info: dict[str, dict], count: int):
    batch: list[str] = []
    size = 0
    for eid in ids:
        n = info[eid].get("size")
        n = n if isinstance(n, int) and n > 0 else 0
        if batch and (len(batch) >= count or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(eid)
        size += n
    if batch:
        yield batch

