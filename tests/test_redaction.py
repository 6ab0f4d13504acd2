import pytest

from pideai_otel import NO_REDACTION, RedactionPolicy

policy = RedactionPolicy(extra_secret_params=["x-amz-signature"])


@pytest.mark.parametrize(
    ("text", "secret", "marker"),
    [
        ("https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key=AIzaSyA-123_secret", "AIzaSyA-123_secret", "[REDACTED:secret]"),
        ("GET /cb?code=abc123&state=ok", "abc123", "[REDACTED:secret]"),
        ("https://s3/x?X-Amz-Signature=deadbeef99", "deadbeef99", "[REDACTED:secret]"),
        ("https://admin:hunter2@db.internal/x", "hunter2", "[REDACTED:userinfo]"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9", "[REDACTED:token]"),
        ("contact maria.perez+orders@example.co.ve now", "maria.perez+orders@example.co.ve", "[REDACTED:email]"),
        ("call +58 414-555-1234 please", "414-555-1234", "[REDACTED:phone]"),
        ("call +584145551234 please", "584145551234", "[REDACTED:phone]"),
        ("local (0212) 555 1234", "555 1234", "[REDACTED:phone]"),
        ("local 0414-555-1234", "0414-555-1234", "[REDACTED:phone]"),
        ("card 4111 1111 1111 1111 exp", "4111 1111 1111 1111", "[REDACTED:card]"),
        ("card 5500-0000-0000-0004", "5500-0000-0000-0004", "[REDACTED:card]"),
    ],
)
def test_text_redaction(text: str, secret: str, marker: str) -> None:
    out = policy.redact_text(text)
    assert secret not in out
    assert marker in out


@pytest.mark.parametrize(
    "text",
    ["order total 1234.50 USD", "took 1532 ms", "2026-12-03T14:39:05Z", "trace 4bf92f3577b34da6a3ce929d0e0e4736",
     "timestamp 1796309398351653182", "version 1.45.2", "not a card 4111 1111 1111 1112"],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert policy.redact_text(text) == text


def test_credential_keys_lose_their_whole_value() -> None:
    attrs = {"http.request.header.authorization": ("Basic Zm9vOmJhcg==",), "x-goog-api-key": "k", "cookie": "sid=1"}
    out = policy.redact_attributes(attrs)
    assert out == {"http.request.header.authorization": "[REDACTED:credential]", "x-goog-api-key": "[REDACTED:credential]",
                   "cookie": "[REDACTED:credential]"}


def test_digits_only_phone_under_a_phone_key() -> None:
    assert policy.redact_value("messaging.recipient_phone", "584141234567") == "[REDACTED:phone]"
    assert policy.redact_value("order.amount_cents", "584141234567") == "584141234567"


def test_safe_keys_and_unchanged_attributes() -> None:
    assert policy.redact_attributes({"order_id": "4111111111111111", "http.method": "GET"}) is None


def test_no_redaction_twin_changes_nothing() -> None:
    assert NO_REDACTION.redact_text("mail a@b.com") == "mail a@b.com"


def test_remembered_results_stay_correct_and_bounded() -> None:
    fresh = RedactionPolicy()
    for n in range(10_000):  # more distinct values than the memo holds
        assert fresh.redact_text(f"user{n}@example.com") == "[REDACTED:email]"
    assert fresh.redact_text("user7@example.com") == "[REDACTED:email]"
    assert len(fresh._memo) <= 4096
    assert fresh.redact_value("note", "call 0414-555-1234") == "call [REDACTED:phone]"
    assert fresh.redact_value("note", "call 0414-555-1234") == "call [REDACTED:phone]"  # from the memo


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"headers":{"Cookie":"session=9f8e7d","X-Api-Key":"sk_live_51HxY"}}', "9f8e7d"),
        ('{"headers":{"Cookie":"session=9f8e7d","X-Api-Key":"sk_live_51HxY"}}', "sk_live_51HxY"),
        ('json body {"password": "hunter2hunter2", "api_key": "sk_live_2"}', "hunter2hunter2"),
        ("{'client_secret': 'abc\\'def'}", "abc"),
        ('{"access_token":"ya29.a0Af"}', "ya29.a0Af"),
    ],
)
def test_credentials_inside_serialized_values(text: str, secret: str) -> None:
    out = policy.redact_text(text)
    assert secret not in out and "[REDACTED:credential]" in out


def test_serialized_values_without_credentials_are_untouched() -> None:
    text = '{"tokens_used": 12, "status": "ok", "route": "/orders"}'
    assert policy.redact_text(text) == text
