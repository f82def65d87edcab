"""What the engine says about a failure (a reason stored in the book, an operator's answer, an
error line) never carries an endpoint's key: an exception's words often quote the URL it failed on."""

from __future__ import annotations

from engine.redact import MAX_SAID, said, scrub


def test_a_url_in_an_exception_is_cut_to_scheme_host_and_port():
    exc = RuntimeError("429, message='Too Many Requests', url='https://user:PW@rpc.example.org:8443/v3/KEY123?apikey=Q9'")
    text = said(exc)
    assert text == ("RuntimeError: 429, message='Too Many Requests', url='https://rpc.example.org:8443/…'")
    assert not any(secret in text for secret in ("PW", "KEY123", "Q9", "user"))


def test_said_is_one_line_and_bounded():
    text = scrub("line one\nline two\t" + "x" * 1000)
    assert "\n" not in text and len(text) == MAX_SAID and text.endswith("…")
    assert said(OSError()) == "OSError"
