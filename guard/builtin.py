"""The detectors every deployment has: PII confirmed by checksums, and vendor secret shapes.

PII patterns are bounded and anchored by lookarounds so they never start or end inside a
longer token, and stay linear on adversarial input. Secret patterns are recognisable from a
prefix of at most 40 characters and then consume the rest of the token with an open-ended
quantifier: the streaming scanner may see a key split across two releases, and its look-back
re-scan must find one match covering the continuation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from guard.checksums import card_number_valid, iban_valid, identifying_ip, phone_plausible
from guard.detectors import Category, Detector, Hints, PatternDetector, may_occur

DIGITS = re.compile(r"\d")  # every number-shaped value holds one (any script's digits)


class TrimmingDetector:
    """A pattern whose greedy match may run on into neighbouring groups (a CVV after a card
    number, a word after an IBAN): when the whole match fails `validate`, up to two trailing
    groups, each ending before a separator in `cuts`, are dropped in turn and checked again."""

    __slots__ = ("_cuts", "_hints", "_pattern", "_validate", "category", "name", "reach")

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
        self._hints = hints

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if not may_occur(text, self._hints):
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


EMAIL = (
    r"(?<![\w%+\-@])(?<!\w\.)"
    r"[A-Za-z0-9_%+\-][A-Za-z0-9._%+\-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![\w@\-]|\.[A-Za-z0-9])"
)

# Every repetition needs a separator or bracket before its digits, so a digit run has exactly
# one parse and a failed match cannot backtrack exponentially. The lookahead for 8 digits
# drops short "+1" candidates before they cost a Python-level check.
_PHONE_INTL = (
    r"(?:\(\+|\+\(?)[1-9](?=(?:[ .\-()]{0,2}\d){7})"
    r"\d{0,14}(?:(?:[ .\-]\(?|\)[ .\-]?|\()\d{1,14}){0,10}"
)
# Separators are required: a bare 10-digit run is as likely a Unix timestamp as a phone.
_PHONE_NANP = r"(?:\+?1[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"
PHONE = rf"(?<![\w+.\-/:])(?:{_PHONE_INTL}|{_PHONE_NANP})(?![\w]|[.\-/:]\d)"

CREDIT_CARD = (
    r"(?<![\w.,+\-])(?:\d{13,19}|\d{4}([ \-])\d{3,6}(?:\1\d{1,6}){1,3})(?!\w|[.,]\d)"
)

US_SSN = (
    r"(?<![\w\-.+/:])(?!000|666|9)\d{3}([ \-])(?!00)\d{2}\1(?!0000)\d{4}"
    r"(?!\w|[\-.:/]\d|\1\d)"
)

IBAN = (
    r"(?<!\w)[A-Z]{2}[0-9]{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?!\w)"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)"
# A loose candidate (at least two colons up front) that `ipaddress` then judges.
_IPV6 = (
    r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)"
    r"[0-9A-Fa-f:]{2,39}(?:\.\d{1,3}){0,3}(?![\w:]|\.\d)"
)
# The leading lookahead only lets the engine skip text that cannot start either form.
IP_ADDRESS = rf"(?=[\dA-Fa-f:])(?:{_IPV6}|{_IPV4})"

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
API_KEY = rf"(?<![\w\-])(?:{'|'.join(_KEY_SHAPES)})"
_KEY_HINTS = ("sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
              "xox", "AIza", "k_live_", "k_test_", "hs_")

# "eyJ" is base64url for '{"', the start of every JWT header.
JWT = r"(?<![\w\-])eyJ[A-Za-z0-9_\-]{17,}(?:\.[A-Za-z0-9_\-]+){0,2}"

# Without its END line (not streamed yet, or cut off) the key runs to the end of the text.
PRIVATE_KEY = (
    r"-----BEGIN (?P<kind>(?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?)PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END (?P=kind)PRIVATE KEY-----|[\s\S]*)"
)

_DETECTORS: tuple[Detector, ...] = (
    PatternDetector("email", "pii", EMAIL, reach=254, hints=("@",)),
    TrimmingDetector("phone", "pii", PHONE, reach=64, validate=phone_plausible, cuts=" .-"),
    TrimmingDetector("credit_card", "pii", CREDIT_CARD, reach=64, validate=card_number_valid,
                     cuts=" -"),
    PatternDetector("us_ssn", "pii", US_SSN, reach=16, hints=DIGITS),
    TrimmingDetector("iban", "pii", IBAN, reach=64, validate=iban_valid, cuts=" "),
    PatternDetector("ip_address", "pii", IP_ADDRESS, reach=64, validate=identifying_ip,
                    hints=re.compile(r"[\d:]")),
    PatternDetector("api_key", "secret", API_KEY, reach=512, hints=_KEY_HINTS),
    # An RS256 token with a few claims is 600-1000 characters; 512 would cut its signature.
    PatternDetector("jwt", "secret", JWT, reach=2048, hints=("eyJ",)),
    PatternDetector("private_key", "secret", PRIVATE_KEY, reach=8192, hints=("-----BEGIN ",)),
)

BUILTIN: Mapping[str, Detector] = MappingProxyType({d.name: d for d in _DETECTORS})
