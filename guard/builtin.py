"""The detectors every deployment has: PII confirmed by checksums, and vendor secret shapes.

PII patterns are bounded and anchored by lookarounds so they never start or end inside a
longer token, and stay linear on adversarial input. The lookarounds know only ASCII letters and
digits (of any script) as parts of a token: Chinese or Japanese prose runs into a number or an
address without a space, and an accented letter must not hide a value either. Digit groups may
be set off by any Unicode space or dash (`guard.text`); format characters never reach a pattern
(`guard.scan` takes them out first). Secret patterns are recognisable from a
prefix of at most 40 characters and then consume the rest of the token with an open-ended
quantifier: the streaming scanner may see a key split across two releases, and its look-back
re-scan must find one match covering the continuation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from guard.checksums import (
    card_number_valid,
    iban_valid,
    identifying_ip,
    phone_plausible,
    ssn_plausible,
)
from guard.detectors import Category, Detector, Hints, PatternDetector, may_occur
from guard.text import DASHES, LATIN_LETTERS, SPACES

DIGITS = re.compile(r"\d")  # every number-shaped value holds one (any script's digits)

# What a value must not touch on either side (in a character class): ASCII letters, the
# underscore, and digits of any script, since a value's digits may be of any script too (a
# full-width card number is a card number, a digit glued to it makes a longer number).
_WORD = r"A-Za-z_\d"
_SPACE = re.escape(SPACES)
_DASH = re.escape(DASHES)
# What sets off a phone number's or a card's digit groups: as characters, and as a pattern.
_GROUP_SEPARATORS = SPACES + DASHES + "."
_SEP = f"[{re.escape(_GROUP_SEPARATORS)}]"


class TrimmingDetector:
    """A pattern whose greedy match may run on into neighbouring groups (a CVV after a card
    number, a word after an IBAN): when the whole match fails `validate`, up to two trailing
    groups, each ending before a separator in `cuts`, are dropped in turn and checked again."""

    __slots__ = ("_cuts", "_pattern", "_validate", "category", "hints", "name", "reach")

    DROPPABLE_GROUPS = 2

    def __init__(self, name: str, category: Category, pattern: str, *, reach: int,
                 validate: Callable[[str], bool], cuts: str,
                 hints: Hints = DIGITS) -> None:
        self.name = name
        self.category: Category = category
        self.reach = reach
        self._pattern = re.compile(pattern)
        self._validate = validate
        self._cuts = cuts
        self.hints = hints

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if not may_occur(text, self.hints):
            return
        pos = 0
        while (match := self._pattern.search(text, pos)) is not None:
            start, end = match.span()
            valid_end = self._longest_valid(text, start, end)
            if valid_end is None:
                pos = end
            else:
                yield start, valid_end
                # The dropped groups may begin the next match (two card numbers in a row).
                pos = valid_end

    def _longest_valid(self, text: str, start: int, end: int) -> int | None:
        cuts, candidate = self._cuts, end
        for _ in range(self.DROPPABLE_GROUPS + 1):
            if candidate - start <= self.reach and self._validate(text[start:candidate]):
                return candidate
            candidate -= 1
            while candidate > start and not (text[candidate] in cuts
                                              and text[candidate - 1] not in cuts):
                candidate -= 1
            if candidate <= start:
                return None
        return None

    def __repr__(self) -> str:
        return f"TrimmingDetector({self.name!r}, {self.category!r})"


# Latin letters beyond ASCII (`LATIN_LETTERS`) may be part of an address too:
# an internationalised local part or domain (müller@bücher.de, RFC 6531) is found whole, and
# an accented letter glued to an address is taken with it rather than let it hide the address.
# Letters of other scripts end an address (`请联系jane.doe@example.com获取`), so one whose local
# part is written in them is not found: nothing shows where in the prose it would begin.
_LOCAL = rf"A-Za-z0-9_%+\-{LATIN_LETTERS}"
_LABEL = rf"A-Za-z0-9{LATIN_LETTERS}"
EMAIL = (
    rf"(?<![{_LOCAL}@])(?<![{_LOCAL}]\.)"
    rf"[{_LOCAL}][{_LOCAL}.]{{0,63}}"
    rf"@(?:[{_LABEL}](?:[{_LABEL}\-]{{0,61}}[{_LABEL}])?\.)+[A-Za-z]{{2,63}}"
    rf"(?![{_WORD}@\-]|\.[A-Za-z0-9])"
)

# Every repetition needs a separator or bracket before its digits, so a digit run has exactly
# one parse and a failed match cannot backtrack exponentially. The lookahead for 8 digits
# drops short "+1" candidates before they cost a Python-level check.
_PHONE_INTL = (
    rf"(?:\(\+|\+\(?)[1-9](?=(?:[{_SPACE}.{_DASH}()]{{0,2}}\d){{7}})"
    rf"\d{{0,14}}(?:(?:{_SEP}\(?|\){_SEP}?|\()\d{{1,14}}){{0,10}}"
)
# Separators are required: a bare 10-digit run is as likely a Unix timestamp as a phone.
_PHONE_NANP = rf"(?:\+?1{_SEP}?)?(?:\(\d{{3}}\){_SEP}?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}"
PHONE = (
    rf"(?<![{_WORD}+.{_DASH}/:])(?:{_PHONE_INTL}|{_PHONE_NANP})"
    rf"(?![{_WORD}]|[.{_DASH}/:]\d)"
)

# Groups set off by one separator, repeated (the backreference): any space or any dash; groups
# with mixed separators are not one number. Dots only in exactly four groups of four
# ("4111.1111.1111.1111"): looser dotted groups are build and version numbers
# ("2024.0215.2132.14"), a tenth of which pass the Luhn check.
_CARD_SEP = f"[{_SPACE}{_DASH}]"
CREDIT_CARD = (
    rf"(?<![{_WORD}.,+{_DASH}])"
    rf"(?:\d{{13,19}}|\d{{4}}({_CARD_SEP})\d{{3,6}}(?:\1\d{{1,6}}){{1,3}}"
    rf"|\d{{4}}\.\d{{4}}\.\d{{4}}\.\d{{4}})"
    rf"(?![{_WORD}]|[.,]\d)"
)

# The never-issued areas, groups and serials are left to `ssn_plausible`, which reads digits
# of any script.
US_SSN = (
    rf"(?<![{_WORD}{_DASH}.+/:])\d{{3}}([{_SPACE}{_DASH}])\d{{2}}\1\d{{4}}"
    rf"(?![{_WORD}]|[{_DASH}.:/]\d|\1\d)"
)

# ISO 13616 prints an IBAN in ASCII only; its groups are set off by one kind of space.
IBAN = (
    rf"(?<![{_WORD}])[A-Z]{{2}}[0-9]{{2}}"
    rf"(?:[A-Z0-9]{{11,30}}|([{_SPACE}])[A-Z0-9]{{4}}(?:\1[A-Z0-9]{{4}}){{1,6}}"
    rf"(?:\1[A-Z0-9]{{1,4}})?)(?![{_WORD}])"
)

# ASCII digits only: `ipaddress` reads no others.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"(?<![{_WORD}.]){_OCTET}(?:\.{_OCTET}){{3}}(?![{_WORD}]|\.\d)"
# A loose candidate (at least two colons up front) that `ipaddress` then judges.
_IPV6 = (
    rf"(?<![{_WORD}:.])(?=[0-9A-Fa-f]{{0,4}}:[0-9A-Fa-f]{{0,4}}:)"
    rf"[0-9A-Fa-f:]{{2,39}}(?:\.[0-9]{{1,3}}){{0,3}}(?![{_WORD}:]|\.\d)"
)
# The leading lookahead only lets the engine skip text that cannot start either form.
IP_ADDRESS = rf"(?=[0-9A-Fa-f:])(?:{_IPV6}|{_IPV4})"

_KEY_SHAPES = (
    r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",  # OpenAI, Anthropic
    r"(?:AKIA|ASIA)[A-Z0-9]{16,}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36,}",
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"AIza[A-Za-z0-9_\-]{35,}",  # Google
    r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe secret and restricted; pk_ is public
    # Our client keys have 43 characters after hs_; 32 suffice to know one, within 40.
    r"hs_[A-Za-z0-9_\-]{32,}",
)
API_KEY = rf"(?<![{_WORD}\-])(?:{'|'.join(_KEY_SHAPES)})"
# How each shape above begins.
_KEY_PREFIXES = ("sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                 "xox", "AIza", "sk_live_", "sk_test_", "rk_live_", "rk_test_", "hs_")

# "eyJ" is base64url for '{"', the start of every JWT header.
JWT = rf"(?<![{_WORD}\-])eyJ[A-Za-z0-9_\-]{{17,}}(?:\.[A-Za-z0-9_\-]+){{0,2}}"

SECRET_PREFIXES: tuple[str, ...] = (*_KEY_PREFIXES, "eyJ")
"""How every secret begins that is found by its shape (API keys, JWTs): a stream that breaks
off inside one (`guard.scan.cut_off_end`) must not let out what is too short to match yet."""

# Without its END line (not streamed yet, or cut off) the key runs to the end of the text.
PRIVATE_KEY = (
    r"-----BEGIN (?P<kind>(?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?)PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END (?P=kind)PRIVATE KEY-----|[\s\S]*)"
)

_DETECTORS: tuple[Detector, ...] = (
    PatternDetector("email", "pii", EMAIL, reach=254, hints=("@",)),
    TrimmingDetector("phone", "pii", PHONE, reach=64, validate=phone_plausible,
                     cuts=_GROUP_SEPARATORS),
    TrimmingDetector("credit_card", "pii", CREDIT_CARD, reach=64, validate=card_number_valid,
                     cuts=_GROUP_SEPARATORS),
    PatternDetector("us_ssn", "pii", US_SSN, reach=16, validate=ssn_plausible, hints=DIGITS),
    TrimmingDetector("iban", "pii", IBAN, reach=64, validate=iban_valid, cuts=SPACES),
    PatternDetector("ip_address", "pii", IP_ADDRESS, reach=64, validate=identifying_ip,
                    hints=re.compile(r"[\d:]")),
    PatternDetector("api_key", "secret", API_KEY, reach=512, hints=_KEY_PREFIXES),
    # An RS256 token with a few claims is 600-1000 characters; 512 would cut its signature.
    PatternDetector("jwt", "secret", JWT, reach=2048, hints=("eyJ",)),
    PatternDetector("private_key", "secret", PRIVATE_KEY, reach=8192, hints=("-----BEGIN ",)),
)

BUILTIN: Mapping[str, Detector] = MappingProxyType({d.name: d for d in _DETECTORS})
