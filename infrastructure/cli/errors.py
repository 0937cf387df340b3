"""The CLI's one error boundary: every failure becomes one line on stderr and an exit code.

* ``2`` — the command cannot run as asked: a usage error, a bad ``CJLEDGER_*`` setting,
  a database URL that does not parse (``ConfigError`` and ``BadDatabaseUrl``);
* ``1`` — it ran and failed: the server is unreachable, a query failed, a bug.

Nothing printed may carry a secret: passwords in URLs (``user:secret@``), ``password=``
and ``sslpassword=`` pairs of a connection string or a URL's query, and the passwords of
the configured database and broker URLs are replaced by ``***`` wherever they appear.
This module is imported on every command's path, so it imports nothing heavy at module
level.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlparse

if TYPE_CHECKING:
    from infrastructure.settings import Settings

USAGE_EXIT = 2
RUNTIME_EXIT = 1

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s/]*)@")
# ``password=`` / ``sslpassword=`` pairs of a connection string or of a URL's query
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>(?:\b|ssl)password\s*=\s*)(?P<secret>'[^']*'|[^\s&]+)", re.I
)
SECRET_SETTINGS = ("CJLEDGER_DATABASE_URL", "CJLEDGER_BROKER_URL")


class ConfigError(Exception):
    """The configuration (settings, URLs) makes the command impossible: exit 2."""


def configured_secrets() -> list[str]:
    """Passwords of the URLs in the environment, raw and percent-decoded."""
    secrets: list[str] = []
    for name in SECRET_SETTINGS:
        value = os.environ.get(name, "")
        try:
            url = urlparse(value)
            passwords = [url.password] + [
                secret
                for key, secret in parse_qsl(url.query, keep_blank_values=True)
                if key.lower() in ("password", "sslpassword")
            ]
        except ValueError:
            passwords = []
        for password in filter(None, passwords):
            secrets += [password, unquote(password)]
    return [s for s in secrets if len(s) >= 3]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every password it might hold replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: f"{m['head']}***", text)
    for secret in sorted(configured_secrets() if secrets is None else secrets, key=len)[::-1]:
        text = text.replace(secret, "***")
    return text


def one_line(error: BaseException) -> str:
    """The error's first non-empty line, named by its type unless it speaks for itself."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else ""
    if isinstance(error, ConfigError | ValueError) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def load_settings() -> Settings:
    """``Settings`` from the environment, or a ``ConfigError`` that names the bad setting."""
    from pydantic import ValidationError

    from infrastructure.messaging.validation import describe_validation_error
    from infrastructure.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(
            f"invalid CJLEDGER_* setting: {describe_validation_error(error)}"
        ) from None
