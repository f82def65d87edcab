"""Text about a failure, cut to what may be shown anywhere.

API keys live in endpoint URLs (userinfo, path, query), and an exception's message often quotes
the URL it failed on (aiohttp: `429, message='Too Many Requests', url='https://host/v3/KEY'`).
Log lines are masked by engine/logs.py, but a reason stored in the book, an operator's answer or
an error line is not a log line: whatever the engine says about a failure goes through `said`."""

from __future__ import annotations

import re

MAX_SAID = 300  # characters of a failure's words kept (a proxy's error page can be long)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]]+")


def scrub(text: str) -> str:
    """`text` fit for a one-line message: every URL cut to what safe_url shows, blanks and line
    breaks folded, and cut short."""
    from engine.settings import safe_url

    text = _URL.sub(lambda m: safe_url(m.group(0)), str(text))
    text = " ".join(text.split())
    return text if len(text) <= MAX_SAID else text[:MAX_SAID - 1] + "…"


def said(exc: BaseException) -> str:
    """`Kind: words` of an exception, scrubbed."""
    words = scrub(str(exc))
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__
