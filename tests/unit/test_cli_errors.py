"""The CLI's error boundary hides every secret a database URL or connection string holds."""

from __future__ import annotations

import pytest

from infrastructure.cli.errors import configured_secrets, redact


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("postgresql://cj:pw-1@db/ledger failed", "pw-1"),
        ("host=db password=pw-2 dbname=ledger", "pw-2"),
        ("host=db password='pw 3' dbname=ledger", "pw 3"),
        ("postgresql://db/ledger?sslpassword=key-4&sslmode=require", "key-4"),
        ("host=db sslpassword=key-5 sslmode=require", "key-5"),
        ("postgresql://db/ledger?application_name=x&password=pw-6", "pw-6"),
    ],
)
def test_passwords_in_urls_and_connection_strings_are_redacted(text: str, hidden: str) -> None:
    shown = redact(text, [])
    assert hidden not in shown
    assert "***" in shown


def test_what_is_not_a_secret_stays_readable() -> None:
    shown = redact("postgresql://db/ledger?sslpassword=k&sslmode=require&application_name=cj", [])
    assert shown == "postgresql://db/ledger?sslpassword=***&sslmode=require&application_name=cj"


def test_the_configured_urls_secrets_are_hidden_wherever_they_appear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "CJLEDGER_DATABASE_URL", "postgresql://cj:db-pw%21@db/l?sslpassword=ssl-key-pw"
    )
    assert {"db-pw%21", "db-pw!", "ssl-key-pw"} <= set(configured_secrets())
    assert redact("the key ssl-key-pw and db-pw! leaked") == "the key *** and *** leaked"
