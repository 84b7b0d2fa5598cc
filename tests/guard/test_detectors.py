"""The built-in detectors, held to realistic text: exact spans for what must be caught, nothing
for the dates, versions, prices and identifiers that merely look alike."""

# The full-width digits and punctuation of Chinese and Japanese prose are test data here.
# ruff: noqa: RUF001

from __future__ import annotations

import re
import time

import pytest

from guard.builtin import BUILTIN, CREDIT_CARD, SECRET_PREFIXES, TrimmingDetector
from guard.checksums import card_number_valid, iban_valid, luhn_valid, ssn_plausible
from guard.detectors import PatternDetector
from guard.scan import Scanner

PII = ("email", "phone", "credit_card", "us_ssn", "iban", "ip_address")
SECRETS = ("api_key", "jwt", "private_key")


def found(name: str, text: str) -> list[str]:
    return [text[start:end] for start, end in BUILTIN[name].find(text)]


def scanned(name: str, text: str) -> list[str]:
    """What the detector finds as every caller runs it: through a `Scanner`, which takes the
    format characters out first and maps its spans back to the text as written."""
    return [text[finding.start:finding.end]
            for finding in Scanner([BUILTIN[name]]).findings(text)]


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


# Chinese and Japanese prose runs into a value without a space, as may a word with an accented
# letter; typesetting sets digit groups off with other spaces and dashes than ASCII's.
UNSPACED_AND_TYPESET: list[tuple[str, str, str]] = [
    ("email", "请联系{}获取更多信息。", "jane.doe@example.com"),
    ("email", "メールは{}まで", "jane.doe@example.com"),
    ("email", "Schreiben Sie an {} bitte.", "müller@firma.de"),
    ("email", "Écrivez à {}.", "renée.côté@exemple.fr"),
    ("email", "Kontakt:{}.", "info@bücher.de"),
    ("phone", "电话{}。", "+86 138 0013 8000"),
    ("phone", "電話番号は{}です", "+81 3-1234-5678"),
    ("phone", "Téléphone : {}.", "+33\u00a01\u00a023\u00a045\u00a067\u00a089"),
    ("phone", "Call {}.", "555\u2011123\u20114567"),
    ("phone", "Office {}.", "(555)\u00a0123\u20134567"),
    ("credit_card", "卡号{}有效", "4111111111111111"),
    ("credit_card", "卡号{}有效", "4111 1111 1111 1111"),
    ("credit_card", "カード番号{}。", "４１１１\u3000１１１１\u3000１１１１\u3000１１１１"),
    ("credit_card", "Số thẻ{}.", "5555555555554444"),
    ("credit_card", "Card {}.", "4111\u00a01111\u00a01111\u00a01111"),
    ("credit_card", "Card {}.", "4111\u202f1111\u202f1111\u202f1111"),
    ("credit_card", "Card {}.", "4111.1111.1111.1111"),
    ("credit_card", "Card {}.", "4111\u20131111\u20131111\u20131111"),
    ("credit_card", "Card {}\u00a0123, exp 12/27", "4111\u00a01111\u00a01111\u00a01111"),
    ("us_ssn", "社保号{}", "123-45-6789"),
    ("us_ssn", "社保号{}。", "１２３-４５-６７８９"),
    ("us_ssn", "SSN {}.", "123\u201145\u20116789"),
    ("us_ssn", "SSN {}.", "123\u221245\u22126789"),
    ("us_ssn", "SSN {}.", "123\u00a045\u00a06789"),
    ("iban", "账号{}。", "DE89370400440532013000"),
    ("iban", "IBAN {}.", "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000"),
    ("iban", "IBAN\u00a0:\u00a0{}.",
     "FR14\u202f2004\u202f1010\u202f0505\u202f0001\u202f3M02\u202f606"),
    ("ip_address", "服务器地址{}可用", "203.0.113.42"),
    ("ip_address", "地址{}。", "2001:db8::ff00:42:8329"),
    ("api_key", "密钥{}获取", OPENAI_KEY),
    ("api_key", "キー{}を使って", GITHUB_TOKEN),
    ("api_key", "clé{}", STRIPE_KEY),
    ("jwt", "令牌{}。", JWT),
]


@pytest.mark.parametrize(("name", "template", "value"), UNSPACED_AND_TYPESET)
def test_a_value_touching_other_scripts_or_typeset_is_found(name: str, template: str,
                                                            value: str) -> None:
    assert found(name, template.format(value)) == [value]


def test_an_accented_word_glued_to_an_address_is_taken_with_it() -> None:
    assert found("email", "Contactéjane.doe@example.com now") == ["Contactéjane.doe@example.com"]


ZERO_WIDTH = "\u200b"
# Invisible format characters inside a value: the whole value is found, and its span covers
# them (tag characters, U+E0000 on, can smuggle text past a reader too).
INVISIBLE: list[tuple[str, str, str]] = [
    ("email", "Mail {} now", "jane\u200b.doe@exam\u2060ple.com"),
    ("email", "请联系{}获取", "jane.doe\u200d@example.com"),
    ("phone", "Call {}.", "+44\u00a020\u20607946\u00a00958"),
    ("credit_card", "卡号{}有效", "4111\u200b1111\u200b1111\u200b1111"),
    ("credit_card", "Card {}.", "4111 11\u200c11 1111 1111"),
    ("credit_card", "Card {}.", "4111\u00ad1111\u00ad1111\u00ad1111"),
    ("us_ssn", "SSN {}.", "123-4\ufeff5-6789"),
    ("iban", "IBAN {}.", "DE89 3704\u200b 0044 0532 0130 00"),
    ("api_key", "key {} end", OPENAI_KEY[:12] + ZERO_WIDTH + OPENAI_KEY[12:]),
    ("api_key", "key {} end", "s\U000e0041k-" + OPENAI_KEY[3:]),
    ("jwt", "Bearer {}.", JWT[:30] + "\u2060" + JWT[30:]),
]


@pytest.mark.parametrize(("name", "template", "value"), INVISIBLE)
def test_invisible_characters_inside_a_value_do_not_hide_it(name: str, template: str,
                                                           value: str) -> None:
    text = template.format(value)
    assert scanned(name, text) == [value]
    assert Scanner([BUILTIN[name]]).redact(text) == template.format(f"[redacted:{name}]")


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
    ("credit_card", "Mixed 4111 1111-1111 1111 and 4111.1111 1111.1111 are not one number."),
    # dotted build numbers whose digits pass the Luhn check
    ("credit_card", "Builds 2024.0101.0900.15 and 2024.0101.1432.8 shipped."),
    # a digit of any script glued to a number makes it a longer one
    ("credit_card", "编号１4111111111111111 and ٣4111111111111111 are too long."),
    ("us_ssn", "Invalid: 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000."),
    ("us_ssn", "Order 123456789 and mixed 123-45 6789 and 1123-45-6789."),
    ("us_ssn", "Phone 555-123-4567 and date 2026-11-28."),
    ("us_ssn", "Never issued: ９１２-３４-５６７８, ０００-１２-３４５６,"
               " ６６６\u2011１２\u2011３４５６."),
    ("us_ssn", "Mixed 123-45\u00a06789 and 123\u201345-6789."),
    ("iban", "Bad checksum DE89 3704 0044 0532 0130 01."),
    ("iban", "Compact bad checksum DE89370400440532013001."),
    ("iban", "Lowercase de89370400440532013000 and short DE89 3704."),
    ("iban", "ABCD1234EFGH5678 PO12 3456 7890 is a part number."),
    ("ip_address", "Loopback 127.0.0.1, 127.1.2.3 and ::1; unspecified 0.0.0.0 and ::."),
    ("ip_address", "Versions 1.2.3 and 10.0.19045; 1.2.3.4.5 is too long; 256.1.1.1 too big."),
    ("ip_address", "At 12:30:45, MAC 00:1A:2B:3C:4D:5E, slice arr[1::2] or x[::3]."),
    ("ip_address", "C++ std::vector and dead::beef and ::ffff:127.0.0.1."),
    # `ipaddress` reads ASCII digits only, and so does the detector
    ("ip_address", "全角２０３.０.１１３.４２ is not read as an address."),
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
    "我们的订单号是12345，发货日期为2026年11月28日，时间戳1732800000。",
    "版本1.2.3发布于2026年。价格：1\u202f234,56\u00a0€，折扣−12.5%。",
    "Le prix est de 1\u00a0234\u00a0567\u00a0€ ; rendez-vous à 12\u00a0h\u00a030 — le 28‑11‑2026.",
    "Emoji 👨\u200d👩\u200d👧 and a word\u00adbreak and \u2066isolated\u2069 text.",
]


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_text_trips_no_detector(text: str) -> None:
    assert {name: scanned(name, text) for name in BUILTIN} == {name: [] for name in BUILTIN}


ALL_KEYS = [OPENAI_KEY, OPENAI_LEGACY_KEY, ANTHROPIC_KEY, AWS_KEY_ID, AWS_SESSION_KEY_ID,
            GITHUB_TOKEN, GITHUB_PAT, SLACK_TOKEN, GOOGLE_KEY, STRIPE_KEY, STRIPE_RESTRICTED_KEY,
            HELLO_SHIP_KEY, JWT]


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_secret_shape_begins_with_a_listed_prefix(key: str) -> None:
    """The streaming scan holds back a broken-off run that begins like a secret."""
    assert key.startswith(SECRET_PREFIXES)


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
    assert iban_valid("DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000")
    assert ssn_plausible("123-45-6789") and ssn_plausible("１２３\u201145\u20116789")
    assert not ssn_plausible("900-45-6789") and not ssn_plausible("123-00-6789")
    assert not ssn_plausible("123-45-678")


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
    "spaced digit groups": "1234\u00a0" * 20_000,
    "dotted digit groups": "1234." * 20_000,
    "dashed digits": "12\u2011" * 33_333,
    "digits in prose": "卡1" * 50_000,
    "full-width digits": "１２３-" * 25_000,
    "latin local part": "é.é-é%" * 16_666,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_input_scans_in_linear_time(text: str) -> None:
    for name, detector in BUILTIN.items():
        began = time.perf_counter()
        list(detector.find(text))
        elapsed = time.perf_counter() - began
        assert elapsed < 0.1, f"{name} took {elapsed * 1000:.0f} ms"


@pytest.mark.parametrize("text", [
    "1\u200b" * 50_000, "4111\u200b\u00a0" * 20_000, "a\u2060@" * 33_333, "\U000e0041" * 100_000,
], ids=["zero-width digits", "zero-width groups", "word joiners", "tag characters"])
def test_format_characters_are_taken_out_in_linear_time(text: str) -> None:
    scanner = Scanner(list(BUILTIN.values()))
    began = time.perf_counter()
    scanner.findings(text)
    elapsed = time.perf_counter() - began
    assert elapsed < 0.5, f"{elapsed * 1000:.0f} ms"


def test_a_pattern_detector_is_its_pattern_confirmed_by_its_check() -> None:
    orders = PatternDetector("order", "pii", r"ORD-\d+", reach=12,
                             validate=lambda value: value.endswith("7"), hints=("ORD-",))
    assert (orders.name, orders.category, orders.reach) == ("order", "pii", 12)
    assert list(orders.find("ORD-17 ORD-18 ORD-27")) == [(0, 6), (14, 20)]
    assert list(orders.find("no orders today")) == []
    compiled = PatternDetector("order", "blocked", re.compile(r"ORD-\d+"), reach=8)
    assert list(compiled.find("see ORD-1")) == [(4, 9)]


def test_a_trimming_detector_built_from_a_builtin_pattern_finds_what_the_builtin_does() -> None:
    cards = TrimmingDetector("card", "pii", CREDIT_CARD, reach=64,
                             validate=card_number_valid, cuts=" -")
    assert (cards.name, cards.category, cards.reach) == ("card", "pii", 64)
    text = "Pay with 4111 1111 1111 1111 123 or 5555-5555-5555-4444, not 1234 5678 9012 3456."
    assert [text[start:end] for start, end in cards.find(text)] == found("credit_card", text) == [
        "4111 1111 1111 1111", "5555-5555-5555-4444"]


@pytest.mark.parametrize(("text", "value"), [
    ("Call +44 20 7946 0958 12 now", "+44 20 7946 0958 12"),
    ("Call +44 20 7946 0958 1234 5678 now", "+44 20 7946 0958"),  # two groups dropped
    ("Call +44 20 7946 0958 1234 5678 9012 now", None),  # three are too many to guess
    ("Card 4111 1111 1111 1111 1 2 now", "4111 1111 1111 1111"),
    # the value kept may end in a one-digit group
    ("Card 4111 111111 11111 1 23 now", "4111 111111 11111 1"),
])
def test_at_most_two_trailing_groups_are_dropped_to_find_a_value(text: str,
                                                                 value: str | None) -> None:
    name = "phone" if "Call" in text else "credit_card"
    assert found(name, text) == ([value] if value else [])
