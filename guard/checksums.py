"""Checks that confirm a pattern match is what it looks like.

A pattern alone cannot tell a card number from an order number of the same length; the
issuer's check digit can. These run on every candidate a built-in detector finds, so they are
pure, never raise, and cost a few microseconds.
"""

from __future__ import annotations

import ipaddress
import re
import string

from guard.text import DASHES, SPACES

# What sets off a value's groups: the checks read only its digits and letters.
_SEPARATOR = re.compile(f"[{re.escape(SPACES + DASHES)}.]")
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
# A doubled Luhn digit with its two digits summed: 7 -> 14 -> 5.
_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_LEADING_GROUP = re.compile(r"\(?\+\(?(\d+)")
# ISO 13616 reads A as 10 ... Z as 35.
_IBAN_LETTERS = {
    ord(letter): str(value) for value, letter in enumerate(string.ascii_uppercase, 10)
}


def _compact(text: str) -> str:
    """`text` without its group separators. The usual ones (space, hyphen) go at C speed
    first: the card check runs on every digit run of card shape in every stream."""
    compact = text.replace(" ", "").replace("-", "")
    return compact if compact.isalnum() else _SEPARATOR.sub("", compact)


def luhn_valid(digits: str) -> bool:
    """Whether `digits` (decimal digits only) end in a correct Luhn check digit.

    Every card number carries one, so it rejects nine in ten random numbers of card shape and
    every single mistyped digit.
    """
    if not digits.isdecimal():
        return False
    # Built from C-level maps: this runs on every digit run of card shape in every stream.
    doubled = sum(map(_LUHN_DOUBLED.__getitem__, map(int, digits[-2::-2])))
    return (sum(map(int, digits[-1::-2])) + doubled) % 10 == 0


def card_number_valid(text: str) -> bool:
    """Whether `text`, separators aside, is a 13-19 digit number passing Luhn.

    A leading 0 (in any script) is refused: that major industry identifier is not issued to
    cards, while zero-padded identifiers are common and a run of zeros always passes Luhn.
    """
    digits = _compact(text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits) and int(digits[0]) != 0


def ssn_plausible(text: str) -> bool:
    """Whether `text`, separators aside, is a US social security number that can be issued:
    area 000, 666 and 900-999, group 00 and serial 0000 never are."""
    digits = _compact(text)
    if len(digits) != 9 or not digits.isdecimal():
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def iban_valid(text: str) -> bool:
    """Whether `text`, separators aside, is an IBAN whose check digits verify (ISO 13616
    mod 97).

    The check catches every single-character error and most transpositions, and a random
    string of IBAN shape passes once in 97 tries. Per-country lengths are not checked, so a
    country joining the scheme needs no code change.
    """
    compact = _compact(text)
    if _IBAN.fullmatch(compact) is None:
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1


def phone_plausible(text: str) -> bool:
    """Whether a phone-number candidate has a plausible digit count and punctuation.

    E.164 allows at most 15 digits and no numbering plan has fewer than 8 with its country
    code, so other runs are counters or identifiers. A number written with separators sets off
    its 1-3 digit country code (E.123), so "+1234567.89 1.2" is an amount, not a phone. At
    most one bracket pair, around a group ("(+44)", "(0)20", "(555)").
    """
    if not 8 <= sum(char.isdecimal() for char in text) <= 15:
        return False
    lead = _LEADING_GROUP.match(text)
    if lead is not None and len(lead.group(1)) > 3 and not text[1:].isdecimal():
        return False
    if text.count("(") > 1 or text.count(")") > 1:
        return False
    opening, closing = text.find("("), text.find(")")
    return 0 <= opening < closing or opening == closing == -1


def identifying_ip(text: str) -> bool:
    """Whether `text` is an IP address that could point at a host, and so at a person.

    Loopback, unspecified and reserved addresses name no one. Refusing IPv6's reserved ranges
    also drops hex-and-colon look-alikes: Python slices (`[1::2]`), `dead::beef`. An
    IPv4-mapped IPv6 address is judged by the IPv4 address it carries.
    """
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_loopback or address.is_unspecified or address.is_reserved)
