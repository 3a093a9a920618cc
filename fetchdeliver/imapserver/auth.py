"""Who may log in, and which mail they see: the Authenticator interface and a Dovecot passwd-file.

A passwd-file line is `user:{SCHEME}secret:uid:gid:gecos:home:shell:extra`
(only the first two fields are required). Extra fields are space-separated
`key=value`; `userdb_mail=maildir:PATH` (or `mail=`, or `mbox:PATH`) gives the
user's mail, with `~` standing for the home field.

Schemes: {PLAIN}/{CLEARTEXT}, {SHA512-CRYPT}, {SHA256-CRYPT}, {MD5-CRYPT},
{BLF-CRYPT} (through the C library's crypt(3)), {ARGON2ID}/{ARGON2I} and
libsodium's "$7$" {SCRYPT} (through libsodium, which Dovecot itself uses), and
{SCRYPT} as "$scrypt$ln=N,r=R,p=P$salt$hash" (hashlib.scrypt), and {SCRAM-SHA-256} /
{SCRAM-SHA-1} as Dovecot writes them ("ITER,salt,StoredKey,ServerKey", base64), which also let
users log in with SASL SCRAM (fetchdeliver/sasl.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from fetchdeliver.errors import ConfigError

DEFAULT_SCHEME = "SHA512-CRYPT"
SCRAM_SCHEMES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}


class Account:
    """A logged-in user: their name and a factory for their Storage."""

    __slots__ = ("user", "home", "mail", "uid", "gid", "extra")

    def __init__(self, user: str, mail: str | None = None, home: str = "", uid: int | None = None,
                 gid: int | None = None, extra: dict | None = None) -> None:
        self.user = user
        self.mail = mail          # "maildir:PATH" / "mbox:PATH" or None for [delivery]'s
        self.home = home
        self.uid = uid
        self.gid = gid
        self.extra = extra or {}


class Authenticator:
    """Check a login. Return an Account, or None for a wrong user or password.

    Optional methods (fetchdeliver/sasl.py offers the matching SASL mechanisms when present):

        scram_credentials(user, hash_name) -> (sasl.ScramKeys, Account) | None   # SCRAM-SHA-256/-1
        validate_token(user, token) -> Account | None                           # OAUTHBEARER, XOAUTH2

    validate_token gets the OAuth 2.0 bearer token and the user the client named ("" when
    OAUTHBEARER names none); return the Account the token belongs to, or None to refuse it.
    """

    def authenticate(self, user: str, password: str) -> Account | None:
        raise NotImplementedError


# -- password schemes -----------------------------------------------------------------

def _crypt(password: str, hashed: str) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return False
    try:
        out = crypt.crypt(password, hashed)
    except (OSError, ValueError):
        return False
    return bool(out) and hmac.compare_digest(out.encode(), hashed.encode())


_sodium = None


def _libsodium():
    """libsodium through ctypes, or False when it is not installed."""
    global _sodium
    if _sodium is None:
        import ctypes
        import ctypes.util

        _sodium = False
        for name in (ctypes.util.find_library("sodium"), "libsodium.so.23", "libsodium.so"):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            if lib.sodium_init() >= 0:
                _sodium = lib
                break
    return _sodium


def _sodium_verify(func: str, password: str, hashed: str) -> bool | None:
    lib = _libsodium()
    if not lib:
        return None
    import ctypes

    pw = password.encode()
    return getattr(lib, func)(ctypes.c_char_p(hashed.encode() + b"\0"), ctypes.c_char_p(pw),
                              ctypes.c_ulonglong(len(pw))) == 0


def _scrypt_verify(password: str, hashed: str) -> bool | None:
    if hashed.startswith("$7$"):
        return _sodium_verify("crypto_pwhash_scryptsalsa208sha256_str_verify", password, hashed)
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "scrypt":
        return None
    try:
        params = dict(kv.split("=", 1) for kv in parts[2].split(","))
        n, r, p = 1 << int(params["ln"]), int(params["r"]), int(params["p"])
        salt = _b64decode(parts[3])
        want = _b64decode(parts[4])
    except (KeyError, ValueError):
        return None
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want),
                         maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(got, want)


def _b64decode(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def verify_password(password: str, stored: str) -> bool:
    """Check `password` against a passwd-file password field ("{SCHEME}secret")."""
    scheme = "CRYPT"
    secret = stored
    if stored.startswith("{") and "}" in stored:
        scheme, secret = stored[1:].split("}", 1)
        scheme = scheme.upper()
    scheme, _, enc = scheme.partition(".")   # {PLAIN.b64} style encodings
    if enc.lower() in ("b64", "base64"):
        secret = base64.b64decode(secret).decode("utf-8", "replace")
    if scheme in ("PLAIN", "CLEARTEXT", "CLEAR"):
        return hmac.compare_digest(password.encode(), secret.encode())
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "BLF-CRYPT", "CRYPT", "DES-CRYPT"):
        return _crypt(password, secret)
    if scheme in ("ARGON2ID", "ARGON2I"):
        ok = _sodium_verify("crypto_pwhash_str_verify", password, secret)
        return bool(ok)
    if scheme == "SCRYPT":
        return bool(_scrypt_verify(password, secret))
    if scheme in SCRAM_SCHEMES:
        from fetchdeliver.sasl import ScramKeys

        try:
            return ScramKeys.parse_dovecot(secret, SCRAM_SCHEMES[scheme]).matches_password(password)
        except ValueError:
            return False
    if scheme in ("SHA512", "SHA256", "SHA1", "SHA", "SSHA512", "SSHA256", "SSHA"):
        algo = {"SHA": "sha1", "SSHA": "sha1", "SHA1": "sha1", "SHA256": "sha256", "SSHA256": "sha256",
                "SHA512": "sha512", "SSHA512": "sha512"}[scheme]
        try:
            raw = base64.b64decode(secret)
        except ValueError:
            return False
        size = hashlib.new(algo).digest_size
        digest, salt = raw[:size], raw[size:]
        if not scheme.startswith("SS"):
            salt = b""
        return hmac.compare_digest(hashlib.new(algo, password.encode() + salt).digest(), digest)
    return False


def supported_schemes() -> list[str]:
    out = ["PLAIN", "SHA512-CRYPT", "SHA256-CRYPT", "SCRYPT", "SCRAM-SHA-256"]
    if _crypt_can("$2b$04$abcdefghijklmnopqrstuu"):
        out.append("BLF-CRYPT")
    if _libsodium():
        out.append("ARGON2ID")
    return out


def _crypt_can(salt: str) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return False
    try:
        return (crypt.crypt("x", salt) or "").startswith(salt[:4])
    except (OSError, ValueError):
        return False


def hash_password(password: str, scheme: str = DEFAULT_SCHEME) -> str:
    """A "{SCHEME}hash" string Dovecot accepts; never a plain one."""
    scheme = scheme.upper()
    salt_chars = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

    def salt(n):
        return "".join(salt_chars[b % 64] for b in os.urandom(n))

    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT"):
        prefix = {"SHA512-CRYPT": "$6$", "SHA256-CRYPT": "$5$", "BLF-CRYPT": "$2b$10$"}[scheme]
        setting = prefix + salt(22 if scheme == "BLF-CRYPT" else 16)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        out = crypt.crypt(password, setting)
        if not out or not out.startswith(prefix[:3]):
            raise ConfigError(f"this system's crypt(3) cannot make {scheme} hashes")
        return f"{{{scheme}}}{out}"
    if scheme == "SCRYPT":
        s = os.urandom(16)
        ln, r, p = 15, 8, 1
        h = hashlib.scrypt(password.encode(), salt=s, n=1 << ln, r=r, p=p, dklen=32,
                           maxmem=256 * 1024 * 1024)
        return f"{{SCRYPT}}$scrypt$ln={ln},r={r},p={p}${_b64(s)}${_b64(h)}"
    if scheme in SCRAM_SCHEMES:
        from fetchdeliver.sasl import ScramKeys

        return f"{{{scheme}}}{ScramKeys.from_password(password, SCRAM_SCHEMES[scheme]).dovecot()}"
    if scheme == "ARGON2ID":
        lib = _libsodium()
        if not lib:
            raise ConfigError("ARGON2ID needs libsodium (apt-get install libsodium23)")
        import ctypes

        out = ctypes.create_string_buffer(128)
        pw = password.encode()
        # crypto_pwhash_OPSLIMIT_MODERATE / MEMLIMIT_INTERACTIVE-like settings, as Dovecot's defaults.
        if lib.crypto_pwhash_str_alg(out, ctypes.c_char_p(pw), ctypes.c_ulonglong(len(pw)),
                                     ctypes.c_ulonglong(3), ctypes.c_size_t(64 * 1024 * 1024),
                                     ctypes.c_int(2)) != 0:
            raise ConfigError("libsodium could not hash the password (out of memory?)")
        return "{ARGON2ID}" + out.value.decode()
    raise ConfigError(f"unknown or unsupported password scheme {scheme!r} "
                      f"(choose one of {', '.join(supported_schemes()[1:])})")


# -- the passwd-file --------------------------------------------------------------------

class PasswdEntry:
    __slots__ = ("user", "password", "uid", "gid", "home", "extra")

    def __init__(self, user, password, uid, gid, home, extra) -> None:
        self.user = user
        self.password = password
        self.uid = uid
        self.gid = gid
        self.home = home
        self.extra = extra


def parse_passwd(text: str, path: str = "passwd-file") -> dict[str, PasswdEntry]:
    """{user: entry} from Dovecot passwd-file text; ConfigError names line and problem."""
    users: dict[str, PasswdEntry] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 2 or not fields[0]:
            raise ConfigError(f"line {lineno}: expected user:password[:uid:gid:gecos:home:shell:extra]",
                              file=path)
        # Crypt hashes contain no ':'; Dovecot splits the same way.
        user, pw = fields[0], fields[1]
        rest = fields[2:] + [""] * max(0, 6 - len(fields[2:]))
        uid = int(rest[0]) if rest[0].isdigit() else None
        gid = int(rest[1]) if rest[1].isdigit() else None
        home = rest[3]
        extra = {}
        for item in ":".join(rest[5:]).split():
            k, _, v = item.partition("=")
            extra[k] = v
        users[user] = PasswdEntry(user, pw, uid, gid, home, extra)
    return users


def mail_location(entry: PasswdEntry) -> str | None:
    """The entry's "maildir:PATH" / "mbox:PATH" with ~ expanded, a "postgresql://..." URL as it is, or None."""
    loc = entry.extra.get("userdb_mail") or entry.extra.get("mail")
    if not loc:
        return None
    kind, _, rest = loc.partition(":")
    if kind.lower() in ("postgresql", "postgres") and rest.startswith("//"):
        return loc                 # a URL: its colons (port, password) belong to it
    path = rest.split(":", 1)[0]   # drop Dovecot options such as :LAYOUT=fs or :INBOX=...
    if path.startswith("~") and entry.home:
        path = entry.home + path[1:]
    return f"{kind.lower()}:{path}"


class PasswdFileAuthenticator(Authenticator):
    """Users from a Dovecot passwd-file, re-read whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = None
        self._users: dict[str, PasswdEntry] = {}

    def users(self) -> dict[str, PasswdEntry]:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise ConfigError(f"cannot read passwd_file: {e.strerror}", file=self.path) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                self._users = parse_passwd(f.read(), self.path)
            self._stamp = stamp
        return self._users

    def authenticate(self, user: str, password: str) -> Account | None:
        entry = self.users().get(user)
        if entry is None:
            # Spend about the same time as a real check, so a probe cannot tell users apart.
            verify_password(password, "{SHA512-CRYPT}$6$aaaaaaaaaaaaaaaa$")
            return None
        if not verify_password(password, entry.password):
            return None
        return _account(entry)

    def account(self, user: str) -> Account | None:
        """The user's Account without a password check (their mail, for a login proven otherwise:
        an OAuth2 token the issuer vouched for)."""
        entry = self.users().get(user)
        return _account(entry) if entry is not None else None

    def scram_credentials(self, user: str, hash_name: str = "sha256"):
        """(ScramKeys, Account) for SASL SCRAM, from a {SCRAM-SHA-256}/{SCRAM-SHA-1} or {PLAIN}
        password; None for an unknown user or one whose hash cannot serve SCRAM (a crypt hash)."""
        from fetchdeliver.sasl import ScramKeys

        entry = self.users().get(user)
        if entry is None:
            return None
        stored = entry.password
        scheme, secret = "CRYPT", stored
        if stored.startswith("{") and "}" in stored:
            scheme, secret = stored[1:].split("}", 1)
            scheme = scheme.upper()
        if SCRAM_SCHEMES.get(scheme) == hash_name:
            try:
                keys = ScramKeys.parse_dovecot(secret, hash_name)
            except ValueError:
                return None
        elif scheme in ("PLAIN", "CLEARTEXT", "CLEAR"):
            keys = ScramKeys.from_password(secret, hash_name)
        else:
            return None
        return keys, _account(entry)


def _account(entry: PasswdEntry) -> Account:
    return Account(entry.user, mail_location(entry), entry.home, entry.uid, entry.gid, entry.extra)


def set_password(path: str, user: str, password: str, scheme: str = DEFAULT_SCHEME) -> None:
    """Add or replace `user`'s hashed entry in passwd-file `path`, keeping the other fields."""
    if not user or any(c in user for c in ":\n\r\0") or user != user.strip():
        raise ConfigError(f"invalid user name {user!r} (no ':', spaces or control characters)")
    hashed = hash_password(password, scheme)
    lines: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        pass
    if lines and lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == user and len(fields) >= 2:
            fields[1] = hashed
            lines[i] = ":".join(fields)
            break
    else:
        lines.append(f"{user}:{hashed}::::::")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        st = os.stat(path)
        os.chmod(tmp, st.st_mode & 0o777)
    except FileNotFoundError:
        pass
    os.replace(tmp, path)
