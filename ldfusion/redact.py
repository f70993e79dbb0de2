"""Keeping credentials out of logs, errors and saved configs.

Camera URLs carry them (``rtsp://user:password@192.168.1.20/stream1``), and many HTTP and
MJPEG IP cameras take them in the query (``?user=admin&pwd=...``, ``?token=...``).
``mask_credentials`` is the one place that hides them: it replaces the user-info part of
every URL in a string, or in every string of a dict/list tree, and the values of query
parameters that name a user, password, token or key, with ``***``. Camera names in messages, the saved
``config.yaml``, ``--print-config``, one-line errors and (through ``MaskCredentials`` on the
command line's log handlers) every log record go through it.

Convention: the user-info is everything between ``scheme://`` and the last ``@`` before
the host, so a password holding an unescaped ``@`` is masked whole; one holding an
unescaped ``/`` must be percent-encoded (``%2F``), as RFC 3986 asks.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#]*@")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
_PARAMETER = re.compile(r"(?P<lead>[?&;#](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")
# Query (and fragment) parameters that carry credentials, by the words their names are made of
# (user_pwd, X-Api-Key, AWSAccessKeyId, client_secret): IP cameras, their SDKs and signed URLs.
# Whole words, so that author, passthrough, hotkey or tokenizer are left as they are.
_SECRET_WORDS = frozenset({
    "user", "username", "usr", "login", "loginuse", "loginpas", "pass", "passwd", "password", "pwd", "pw", "psw",
    "token", "jwt", "ticket", "secret", "credential", "credentials", "signature", "sig", "auth", "authorization",
    "key", "keys", "apikey", "apikeys", "session", "sessionid", "sid",
})
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def mask_credentials(value: Any) -> Any:
    """``value`` with URL credentials replaced by ``***``; dicts, lists and tuples recursively."""
    if isinstance(value, str):
        value = _USERINFO.sub(rf"\g<scheme>{MASK}@", value)
        return _URL.sub(lambda url: _PARAMETER.sub(_masked_parameter, url.group()), value)
    if isinstance(value, dict):
        return {key: mask_credentials(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_credentials(item) for item in value)
    return value


def _masked_parameter(parameter: re.Match) -> str:
    # Decoded first: a server reads ?%70assword= as ?password=, and its value was shown.
    words = {word.lower() for word in _NAME_WORDS.findall(unquote_plus(parameter.group("name")))}
    secret = not words.isdisjoint(_SECRET_WORDS) and parameter.group("value")
    return parameter.group("lead") + MASK if secret else parameter.group()


class MaskCredentials(logging.Filter):
    """A handler filter: masks credentials in the formatted message and any traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_credentials(record.exc_text)
        return True
