"""The built-in detectors, held to realistic text: exact spans for what must be caught, nothing
for the dates, versions, prices and identifiers that merely look alike."""

from __future__ import annotations

import time

import pytest

from guard.builtin import BUILTIN
from guard.checksums import iban_valid, luhn_valid

PII = ("email", "phone", "credit_card", "us_ssn", "iban", "ip_address")
SECRETS = ("api_key", "jwt", "private_key")


def found(name: str, text: str) -> list[str]:
    return [text[start:end] for start, end in BUILTIN[name].find(text)]


def fake(prefix: str, length: int, alphabet: str = "A1b2C3d4E5f6G7h8I9j0K") -> str:
    """A key of the vendor's shape, assembled at run time so that no secret scanner mistakes
    this file for a leak."""
    body = (alphabet * (length // len(alphabet) + 1))[:length]
    return prefix + body


OPENAI_KEY = fake("sk-" + "proj-", 120)
OPENAI_LEGACY_KEY = fake("sk-", 48)
ANTHROPIC_KEY = fake("sk-" + "ant-api03-", 93, "aB3_-xY9zQ")
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SESSION_KEY_ID = "ASIA" + "Y34FZKBOKMUTVV7A"
GITHUB_TOKEN = fake("ghp" + "_", 36)
GITHUB_PAT = fake("github" + "_pat_", 82, "11ABCdef_0123")
SLACK_TOKEN = "xoxb" + "-123456789012-1234567890123-" + fake("", 24)
GOOGLE_KEY = fake("AI" + "za", 35, "SyA-_9xQz")
STRIPE_KEY = fake("sk" + "_live_", 99)
STRIPE_RESTRICTED_KEY = fake("rk" + "_test_", 24)
HELLO_SHIP_KEY = fake("hs" + "_", 43, "Zk8-_qW3")
JWT = ".".join((
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ",
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
))
KEY_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiW/M2bS1G\n"
PEM = "-----BEGIN PRIVATE KEY-----\n" + KEY_BODY + "-----END PRIVATE KEY-----"
RSA_PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + KEY_BODY + "-----END RSA PRIVATE KEY-----"
OPENSSH_PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_BODY
               + "-----END OPENSSH PRIVATE KEY-----")
EC_PEM = "-----BEGIN EC PRIVATE KEY-----\n" + KEY_BODY + "-----END EC PRIVATE KEY-----"

POSITIVES: list[tuple[str, str, str]] = [
    ("email", "Mail me at {}.", "jane.doe@example.com"),
    ("email", "Contact: {}, thanks", "j_o+news@mail.example.co.uk"),
    ("email", "<{}>", "support-team@hello-ship.io"),
    ("email", "({})", "A.B%tag@sub-domain.example.museum"),
    ("email", "Reply to {}!", "x@y.io"),
    ("phone", "Call {}.", "+44 20 7946 0958"),
    ("phone", "Call {}, ask for Bob.", "+1 (555) 123-4567"),
    ("phone", "Office: {}.", "(555) 123-4567"),
    ("phone", "Tel {}; fax none", "555-123-4567"),
    ("phone", "Tel {}.", "555.123.4567"),
    ("phone", "Toll free: {}!", "1-800-555-0199"),
    ("phone", "Berlin {}.", "+49 30 1234567"),
    ("phone", "Paris {}.", "+33 1 23 45 67 89"),
    ("phone", "Mobile {}.", "+4915112345678"),
    ("phone", "London {}.", "+44 (0)20 7946 0958"),
    ("phone", "UK {}.", "(+44) 20 7946 0958"),
    ("phone", "Call {} 2026 or later", "+44 20 7946 0958"),
    ("phone", "Call {} tomorrow", "+1-555-123-4567"),
    ("credit_card", "Card {}.", "4111 1111 1111 1111"),
    ("credit_card", "Card: {}, exp 12/27", "4111-1111-1111-1111"),
    ("credit_card", "Pay with {}.", "5555555555554444"),
    ("credit_card", "Amex {}.", "3782 822463 10005"),
    ("credit_card", "Discover {}!", "6011 0009 9013 9424"),
    ("credit_card", "Old Visa {}.", "4222222222222"),
    ("credit_card", "Maestro {}.", "6304 0000 0000 0000 018"),
    ("credit_card", "Card {} 123, exp 12/27", "4111 1111 1111 1111"),
    ("us_ssn", "My SSN is {}.", "123-45-6789"),
    ("us_ssn", "SSN: {}, born 1970", "078 05 1120"),
    ("us_ssn", "({})", "665-01-0001"),
    ("iban", "IBAN {}.", "DE89 3704 0044 0532 0130 00"),
    ("iban", "IBAN: {}, BIC COBADEFFXXX", "DE89370400440532013000"),
    ("iban", "Pay {}.", "GB29 NWBK 6016 1331 9268 19"),
    ("iban", "Pay {}!", "GB82WEST12345698765432"),
    ("iban", "Account {}.", "FR14 2004 1010 0505 0001 3M02 606"),
    ("iban", "Konto {}.", "NO93 8601 1117 947"),
    ("iban", "PAY TO {} CASH", "ES91 2100 0418 4502 0005 1332"),
    ("iban", "SEND {} NOW", "ES91 2100 0418 4502 0005 1332"),
    ("ip_address", "Client {}.", "192.168.1.20"),
    ("ip_address", "Resolver {}, port 53", "8.8.8.8"),
    ("ip_address", "GET http://{}:8080/health", "10.0.0.255"),
    ("ip_address", "Host {}.", "2001:db8::ff00:42:8329"),
    ("ip_address", "Link {}!", "fe80::1ff:fe23:4567:890a"),
    ("ip_address", "URL http://[{}]:8080/", "2606:4700:4700::1111"),
    ("ip_address", "Mapped {}.", "::ffff:192.168.1.1"),
    ("api_key", "export OPENAI_API_KEY={}", OPENAI_KEY),
    ("api_key", "key: '{}'.", OPENAI_LEGACY_KEY),
    ("api_key", 'x-api-key: "{}"', ANTHROPIC_KEY),
    ("api_key", "aws_access_key_id = {}.", AWS_KEY_ID),
    ("api_key", "id {}, secret elsewhere", AWS_SESSION_KEY_ID),
    ("api_key", "token {}.", GITHUB_TOKEN),
    ("api_key", "token {}.", GITHUB_PAT),
    ("api_key", "Slack {}.", SLACK_TOKEN),
    ("api_key", "https://maps.googleapis.com/x?key={}&q=1", GOOGLE_KEY),
    ("api_key", "stripe.api_key = '{}'", STRIPE_KEY),
    ("api_key", "Use {}.", STRIPE_RESTRICTED_KEY),
    ("api_key", "Authorization: Bearer {}", HELLO_SHIP_KEY),
    ("jwt", "Authorization: Bearer {}.", JWT),
    ("jwt", "cookie session={}; Path=/", JWT),
    ("private_key", "Here:\n{}\nKeep it safe.", PEM),
    ("private_key", "```\n{}\n```", RSA_PEM),
    ("private_key", "{}", OPENSSH_PEM),
    ("private_key", "key={} end", EC_PEM),
]


@pytest.mark.parametrize(("name", "template", "value"), POSITIVES)
def test_positive_matches_exactly_the_value(name: str, template: str, value: str) -> None:
    assert found(name, template.format(value)) == [value]


NEGATIVES: list[tuple[str, str]] = [
    ("email", "jane.doe@ is not an address, nor is @example.com"),
    ("email", "user@localhost and name@domain.c and user@@example.com"),
    ("email", "5@10.00 each, or 3 @ 4.50"),
    ("phone", "Released 2026-11-28 at 12:30:45, build 10.0.19045."),
    ("phone", "Version 1.2.3, order 123456789, year 2026."),
    ("phone", "It costs 1,234.56 EUR, up +1234567.89 since 1.2.3.4.5 shipped."),
    ("phone", "Card 4111 1111 1111 1111, SSN 123-45-6789, IP 192.168.100.200."),
    ("phone", "Timestamp 1732800000 and +1234 are not phones; neither is +123456789012345678."),
    ("phone", "ORD-555-123-4567 and v555.123.4567 are codes."),
    ("phone", "Brackets +44) 20 7946 0958 and +44 (20 7946 0958 are garbled."),
    ("credit_card", "Card 4111 1111 1111 1112 fails Luhn."),
    ("credit_card", "Order 1234567812345678 and 0000 0000 0000 0000."),
    ("credit_card", "ID 41111111111111111111111 is too long."),
    ("credit_card", "Ratio 0.4111111111111111 is a float."),
    ("credit_card", "Dates 2026-11-28, phone 555-123-4567, SSN 123-45-6789."),
    ("us_ssn", "Invalid: 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000."),
    ("us_ssn", "Order 123456789 and mixed 123-45 6789 and 1123-45-6789."),
    ("us_ssn", "Phone 555-123-4567 and date 2026-11-28."),
    ("iban", "Bad checksum DE89 3704 0044 0532 0130 01."),
    ("iban", "Compact bad checksum DE89370400440532013001."),
    ("iban", "Lowercase de89370400440532013000 and short DE89 3704."),
    ("iban", "ABCD1234EFGH5678 PO12 3456 7890 is a part number."),
    ("ip_address", "Loopback 127.0.0.1, 127.1.2.3 and ::1; unspecified 0.0.0.0 and ::."),
    ("ip_address", "Versions 1.2.3 and 10.0.19045; 1.2.3.4.5 is too long; 256.1.1.1 too big."),
    ("ip_address", "At 12:30:45, MAC 00:1A:2B:3C:4D:5E, slice arr[1::2] or x[::3]."),
    ("ip_address", "C++ std::vector and dead::beef and ::ffff:127.0.0.1."),
    ("api_key", "sk-short and pk_live_" + "abcdefghijklmnopqrstuvwx" + " is public."),
    ("api_key", "task-management-system-design-document is prose."),
    ("api_key", "AKIA" + "IOSFODNN7EXA" + " is too short, ghp_" + "abc too."),
    ("api_key", "Commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed it."),
    ("jwt", "eyJhbGci is too short; theyJhbGciOiJIUzI1NiIsInR5cCI6 is inside a word."),
    ("private_key", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----"),
    ("private_key", "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+g\n-----END CERTIFICATE-----"),
]


@pytest.mark.parametrize(("name", "text"), NEGATIVES)
def test_negative_finds_nothing(name: str, text: str) -> None:
    assert found(name, text) == []


BENIGN = [
    "The invoice is dated 2026-11-28 and due 28.12.2026, at 09:00.",
    "The job ran at 12:30:45 and again at 23:59:59.999.",
    "Upgrade to 1.2.3, or Windows 10.0.19045 if you must.",
    "Order 123456789 shipped; order #2026 is pending.",
    "It costs 1,234.56 EUR, or $1,234,567.89 in total (-12.5%).",
    "Commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed it.",
    "Request id 123e4567-e89b-12d3-a456-426614174000 failed.",
    "Use arr[1::2] in Python and std::vector<int> in C++.",
    "Tracking number 1Z999AA10123456784 arrives Tuesday.",
    "The quick brown fox jumps over the lazy dog. Nothing to see here!",
    "Localhost is 127.0.0.1 or ::1; listen on 0.0.0.0.",
]


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_text_trips_no_detector(text: str) -> None:
    assert {name: found(name, text) for name in BUILTIN} == {name: [] for name in BUILTIN}


@pytest.mark.parametrize("key", [
    OPENAI_KEY, ANTHROPIC_KEY, GITHUB_TOKEN, GITHUB_PAT, SLACK_TOKEN, GOOGLE_KEY, STRIPE_KEY,
    HELLO_SHIP_KEY, AWS_KEY_ID,
])
def test_api_key_is_found_from_its_first_40_characters(key: str) -> None:
    prefix = key[:40]
    assert found("api_key", f"key {prefix}") == [prefix]
    # A longer view of the same text must cover the continuation with one match.
    assert found("api_key", f"key {key} end") == [key]


def test_jwt_is_found_from_its_first_40_characters() -> None:
    assert found("jwt", f"Bearer {JWT[:40]}") == [JWT[:40]]
    assert found("jwt", f"Bearer {JWT[:20]}") == [JWT[:20]]


def test_private_key_without_end_line_runs_to_end_of_text() -> None:
    text = "Sure, here it is:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x"
    assert found("private_key", text) == [text[text.index("-----BEGIN"):]]


def test_private_key_end_line_must_match_its_header() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\nmore"
    assert found("private_key", text) == [text]


def test_iban_is_not_extended_into_the_next_word() -> None:
    text = "Send to ES91 2100 0418 4502 0005 1332 ASAP and GB29 NWBK 6016 1331 9268 19 LATER."
    assert found("iban", text) == ["ES91 2100 0418 4502 0005 1332", "GB29 NWBK 6016 1331 9268 19"]


def test_two_cards_in_a_row_are_both_found() -> None:
    text = "4111 1111 1111 1111 5555 5555 5555 4444"
    assert found("credit_card", text) == ["4111 1111 1111 1111", "5555 5555 5555 4444"]


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("")
    assert not luhn_valid("4111-1111")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")
    assert not iban_valid("DE89")
    assert not iban_valid("DE89 3704 0044 0532 0130 0000 0000 0000 0000")


CATEGORIES = {**dict.fromkeys(PII, "pii"), **dict.fromkeys(SECRETS, "secret")}


def test_builtin_names_and_categories() -> None:
    assert {key: (detector.name, detector.category) for key, detector in BUILTIN.items()} == {
        name: (name, category) for name, category in CATEGORIES.items()
    }
    assert all(detector.reach > 0 for detector in BUILTIN.values())


ADVERSARIAL = {
    "digits": "1" * 100_000,
    "digits and spaces": "1 " * 50_000,
    "digit groups": "1234 " * 20_000,
    "dashes": "12-" * 33_333,
    "dots": "1." * 50_000,
    "colons": "1:" * 50_000,
    "plus": "+1 " * 33_333,
    "email labels": "a@" + "a." * 50_000,
    "emails": "a@a." * 25_000,
    "local part": "a.a-a%" * 16_666,
    "iban groups": "DE89 " + "AB12 " * 20_000,
    "pem headers": "-----BEGIN PRIVATE KEY-----" * 3_700,
    "key prefixes": "sk-eyJ" * 16_666,
    "hex": "dead:" * 20_000,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_input_scans_in_linear_time(text: str) -> None:
    for name, detector in BUILTIN.items():
        began = time.perf_counter()
        list(detector.find(text))
        elapsed = time.perf_counter() - began
        assert elapsed < 0.1, f"{name} took {elapsed * 1000:.0f} ms"
