"""The checks behind the built-in detectors, at the edges of what each one accepts."""

from __future__ import annotations

import pytest

from guard.checksums import card_number_valid, phone_plausible, ssn_plausible


def luhn_completed(body: str) -> str:
    """`body` with the check digit that makes it pass Luhn."""
    for digit in "0123456789":
        candidate = body + digit
        total = 0
        for position, char in enumerate(reversed(candidate)):
            value = int(char) * (2 if position % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("digits", "valid"), [
    (luhn_completed("4" * 11), False),  # 12 digits: too short for a card
    (luhn_completed("4" * 12), True),  # 13: the shortest
    (luhn_completed("4" * 18), True),  # 19: the longest
    (luhn_completed("4" * 19), False),  # 20: too long, whatever its check digit
    (luhn_completed("0" + "4" * 15), False),  # a leading 0 is no issued card
])
def test_a_card_number_has_13_to_19_digits(digits: str, valid: bool) -> None:
    assert card_number_valid(digits) is valid
    grouped = " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))
    assert card_number_valid(grouped) is valid


@pytest.mark.parametrize(("ssn", "plausible"), [
    ("001-01-0001", True),
    ("000-12-3456", False),  # area 000
    ("665-12-3456", True),
    ("666-12-3456", False),
    ("667-12-3456", True),
    ("899-12-3456", True),
    ("900-12-3456", False),  # 900-999 are never issued
    ("123-00-4567", False),  # group 00
    ("123-01-4567", True),
    ("123-10-4567", True),  # a group ending in 0 is a group
    ("123-45-0000", False),  # serial 0000
    ("123-45-0001", True),
    ("123-45-1000", True),  # a serial starting with 1 is a serial
    ("123 45 6789", True),
    ("123456789", True),
    ("123-45-67890", False),
])
def test_ssn_areas_groups_and_serials(ssn: str, plausible: bool) -> None:
    assert ssn_plausible(ssn) is plausible


@pytest.mark.parametrize(("text", "plausible"), [
    ("1234567", False),  # 7 digits: a counter
    ("1234-5678", True),  # 8 digits: the fewest a plan has
    ("+12 345 678 901 2345", True),  # 15 digits: the most E.164 allows
    ("+12 345 678 901 23456", False),  # 16
    ("+353 1 234 5678", True),  # a 3-digit country code set off
    ("+1234 567 8901", False),  # 4 digits before the first separator: no country code
    ("+4915112345678", True),  # no separators: the code is not set off
    ("(+4915112345678", False),  # a bracket is a separator: then the code must be
    ("(555) 123-4567", True),
    ("+44 (0)20 7946 0958", True),
    ("((555) 123-4567", False),  # at most one bracket pair
    ("(555)) 123-4567", False),
    (")555( 123-4567", False),  # and it opens before it closes
    ("(555 123-4567", False),
    ("555) 123-4567", False),
])
def test_phone_numbers_are_judged_by_digits_country_code_and_brackets(text: str,
                                                                      plausible: bool) -> None:
    assert phone_plausible(text) is plausible
