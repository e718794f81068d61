"""Redaction: what every place that shows a URL, an error or a config value runs it through.

Three kinds of secret are recognised in text, each without knowing where the text came from:

- the userinfo of a URL (`https://user:pass@host`, also a token given as the user name): replaced whole;
- the values of secret-looking query, fragment and matrix parameters (`?api_key=`, `#access_token=`,
  `;jsessionid=`, `X-Amz-Signature`, Azure's `sig`, ...), names compared case- and separator-blind;
- `Authorization: <scheme> <credentials>` as it appears in a dumped header mapping;

plus the exact values registered as secret (the values of secret options, secret files read at
start-up), so a secret that an exception message or a library quotes verbatim is masked as well.
Every scan is linear in the text: a log line built by a peer cannot stall the process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import unquote

from yarl import URL

__all__ = [
    "MARKER",
    "SECRET_KEY",
    "forget_secrets",
    "is_secret_key",
    "is_secret_param",
    "redact_text",
    "redact_url",
    "refuse_url_credentials",
    "register_secret",
    "register_secrets",
]

MARKER = "**********"

# Names of config keys, header names and log fields whose values are secret: searched, so
# `basic_auth_password`, `secret_headers` and `X-Api-Key` all match.
SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|authorization|credential|private[_-]?key)")

# Query parameter names compared after lower-casing and dropping `-`, `_`, `.` and brackets. Short
# generic names are secret only as a whole name: `key` (Google APIs), `sig` (Azure SAS), `code`
# (OAuth codes, Azure Functions keys), `auth`, `pass`, `pwd`, `jwt`, `ticket` (CAS), `session`, `otp`.
_SECRET_PARAMS = frozenset(
    {"key", "keys", "sig", "code", "auth", "pass", "pwd", "jwt", "hmac", "otp", "ticket", "session", "sid"}
)
# ... and these as any part of a name: access_token, client_secret, X-Amz-Signature, X-Amz-Credential,
# X-Amz-Security-Token, X-Goog-Signature, PHPSESSID, jsessionid, private_key, ...
_SECRET_PARAM_PARTS = (
    "token",
    "secret",
    "passw",
    "passphrase",
    "signature",
    "credential",
    "apikey",
    "authorization",
    "privatekey",
    "sessionid",
    "sessid",
)
# ... and names ending so: api_key, subscription-key, access_key, sharedaccesskey, ..., x-auth, oauth.
_SECRET_PARAM_SUFFIXES = ("key", "keys", "sig", "auth")
_NAME_NOISE = str.maketrans("", "", "-_.[] ")

# `[?&;#]name=value`. Neither run can contain a separator, so the runs scanned from two separators
# never overlap: linear in the text, and nothing backtracks.
_PARAM = re.compile(r"([?&;#])([^=&;#?\s'\"<>\\]+)=([^&;#?\s'\"<>\\]*)")
# The end of a URL's authority (after `://`): the userinfo is what precedes its last `@`.
_AUTHORITY_END = re.compile(r"[/?#\s'\"<>\\]")
# `Authorization: Bearer abc`, `'Authorization': 'Basic abc'`, `authorization=abc` in dumped headers.
_AUTH_HEADER = re.compile(
    r"(?i)((?:proxy-)?authorization['\"]?\s{0,8}[:=]\s{0,8}['\"]?)((?:[a-z][a-z0-9-]{0,31}[ \t]{1,8})?)[^\s'\",}\]&;#]+"
)

# Exact values registered as secret. Shorter ones would mask ordinary words and numbers all over.
MIN_SECRET_CHARS = 6
_known: set[str] = set()
_known_longest_first: list[str] = []


def is_secret_param(name: str) -> bool:
    """Whether a query parameter of this name carries a secret value."""
    return _secret_param_cached(name) if len(name) <= _CACHED_NAME_CHARS else _secret_param(name)


def is_secret_key(name: str) -> bool:
    """Whether a config key, header name or log field of this name holds a secret value."""
    return _secret_key_cached(name) if len(name) <= _CACHED_NAME_CHARS else _secret_key(name)


def _secret_param(name: str) -> bool:
    norm = unquote(name).lower().translate(_NAME_NOISE)
    return (
        norm in _SECRET_PARAMS
        or any(part in norm for part in _SECRET_PARAM_PARTS)
        or norm.endswith(_SECRET_PARAM_SUFFIXES)
    )


def _secret_key(name: str) -> bool:
    return SECRET_KEY.search(name) is not None


# Names repeat from line to line, so their verdicts are cached: at most 4096 names of at most 128
# characters each, whatever names a peer makes up.
_CACHED_NAME_CHARS = 128
_secret_param_cached = functools.lru_cache(maxsize=4096)(_secret_param)
_secret_key_cached = functools.lru_cache(maxsize=4096)(_secret_key)


def redact_url(url: str | URL) -> str:
    """The URL as it may be shown: userinfo and the values of secret parameters replaced by MARKER.

    Everything else stays as given, so the URL still says where the request went. Never raises: a
    text that is no URL comes back with whatever parts looked like credentials masked.
    """
    return redact_text(str(url))


def redact_text(text: str) -> str:
    """`text` with the credentials of any URL in it, secret parameters and known secrets masked."""
    if "://" in text:
        text = _redact_userinfo(text)
    if "=" in text:
        text = _PARAM.sub(_param_value, text)
    if "uthorization" in text or "UTHORIZATION" in text:
        text = _AUTH_HEADER.sub(_auth_value, text)
    for secret in _known_longest_first:
        if secret in text:
            text = text.replace(secret, MARKER)
    return text


def refuse_url_credentials(url: str, option: str, instead: str) -> None:
    """ValueError when `url` carries credentials (`user:password@`), quoting neither.

    Errors, logs, probe pages and `--print-config` name URLs, so a password inside one would be
    shown there; it belongs in an option of its own (`instead` says which). A text that does not
    parse as a URL is left to the URL's own validation.
    """
    try:
        parsed = URL(url)
    except ValueError:
        return
    if parsed.user is not None or parsed.password is not None:
        raise ValueError(f"{option} must not hold credentials (user:password@); {instead}")


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever text is redacted from now on (values under MIN_SECRET_CHARS excepted)."""
    if value is None or len(value) < MIN_SECRET_CHARS or value in _known:
        return
    _known.add(value)
    # Longest first: a secret that contains another is masked whole.
    _known_longest_first[:] = sorted(_known, key=len, reverse=True)


def register_secrets(values: Iterable[str]) -> None:
    for value in values:
        register_secret(value)


def forget_secrets() -> None:
    """Drop every registered value (for tests that run several configurations in one process)."""
    _known.clear()
    _known_longest_first.clear()


def _redact_userinfo(text: str) -> str:
    parts: list[str] = []
    pos = 0
    while (found := text.find("://", pos)) >= 0:
        start = found + 3
        end_match = _AUTHORITY_END.search(text, start)
        end = end_match.start() if end_match else len(text)
        at = text.rfind("@", start, end)
        if at > start:
            parts.append(text[pos:start])
            parts.append(MARKER)
            pos = at
        else:
            parts.append(text[pos:start])
            pos = start
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def _param_value(match: re.Match[str]) -> str:
    if match.group(3) and is_secret_param(match.group(2)):
        return f"{match.group(1)}{match.group(2)}={MARKER}"
    return match.group(0)


def _auth_value(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{MARKER}"
