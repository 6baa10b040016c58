"""Keep passwords out of anything printed: setting errors, log lines, HTTP bodies.

REDIS_URL and CELERY_BROKER_URL may carry a password (``redis://api:s3cret@cache/0``).
Any text that might quote such a URL goes through ``redact`` first, which keeps the
scheme, user and host (what a reader needs to see which server is meant) and replaces
the password with ``***``. It works on malformed URLs too, since those are exactly the
ones an error message quotes.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ (user may be empty); the password runs to the last "@"
# before the host, so a password containing "@" or ":" is masked whole.
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^\s/]*)@")
# ?password=... / &password=... in a query string (redis-py and kombu accept it).
_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pass)=)[^&#\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL password replaced by ``***``."""
    if "@" not in text and "pass" not in text.lower():
        return text  # the common case (a log line with no URL in it), at no cost
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
