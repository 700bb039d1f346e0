"""Money as Stripe counts it: whole numbers of a currency's smallest unit, never floats."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

# Stripe's zero-decimal currencies, as DOMAIN.md lists them: 12000 JPY is stored as 12000, not 1200000.
_ZERO_DECIMAL_CODES = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
ZERO_DECIMAL = frozenset(_ZERO_DECIMAL_CODES.lower().split())
# Stripe counts these in thousandths; without them 1.250 KWD would be rejected as too precise.
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".lower().split())

# More than any single charge Stripe accepts (at most 12 digits, in any currency); also far from the
# BIGINT limit, so a corrupt payload can never overflow the column.
MAX_MINOR = 999_999_999_999

# Symbols that name one currency (or two); seeing one beside the wrong currency is a mistake worth
# stopping for, e.g. a yen column imported with default currency USD. "$" and others are too shared.
_SYMBOL_CURRENCIES = {
    "€": {"eur"},
    "£": {"gbp"},
    "¥": {"jpy", "cny"},
    "円": {"jpy"},
    "₩": {"krw"},
    "₹": {"inr"},
}

# Number shapes people type. A lone "1,234" is read as thousands; "19,99" (1–2 digits after the
# comma) as a decimal comma; "1.234,56" as European grouping. Anything else is refused, not guessed.
_NUMBER_SHAPES = (
    (re.compile(r"\d+(\.\d*)?|\.\d+"), None),
    (re.compile(r"\d{1,3}(,\d{3})+(\.\d+)?"), ","),
    (re.compile(r"\d{1,3}(\.\d{3})+(,\d+)?"), "."),
    (re.compile(r"\d+,\d{1,2}"), "."),
)
_AMOUNT = re.compile(r"(?P<pre>[^\d.,]*?)\s*(?P<num>[.,]?\d[\d.,]*)\s*(?P<post>[^\d.,]*)")


class AmountError(ValueError):
    """An amount that cannot be read exactly; the message is meant for the seller."""


def normalise_currency(value: object) -> str | None:
    """A three-letter ISO code in lower case (Stripe's form), or None if `value` is not one."""
    if not isinstance(value, str):
        return None
    code = value.strip().lower()
    if len(code) == 3 and code.isascii() and code.isalpha():
        return code
    return None


def decimals(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_minor_units(text: str, currency: str) -> int:
    """Read an amount typed in major units ("$1,234.56", "¥12,000", "19.99") as exact minor units.

    More decimals than the currency has are an error, not rounded: money must come out exact.
    """
    code = normalise_currency(currency)
    if code is None:
        raise AmountError(f"{currency!r} is not a currency code")
    raw = str(text)
    # NFKC turns full-width digits and signs ("１２，０００", "￥") into the ASCII ones.
    cleaned = unicodedata.normalize("NFKC", raw).strip()
    if not cleaned:
        raise AmountError("the amount is empty")
    if any(sign in cleaned for sign in "-−("):
        raise AmountError(f"{_shown(raw)} is negative; refunds are not purchases")
    match = _AMOUNT.fullmatch(cleaned) if len(cleaned) <= 64 else None
    number = _plain_number(match["num"]) if match else None
    if number is None:
        raise AmountError(f"{_shown(raw)} is not an amount")
    _check_labels(raw, match["pre"], match["post"], code)
    whole, _, fraction = number.partition(".")
    places = decimals(code)
    # Written decimals beyond the currency's are refused even when they are zeros: "12.000" JPY may
    # well mean twelve thousand yen.
    if len(fraction) > places:
        allowed = f"{places} decimals" if places else "no decimals"
        raise AmountError(f"{_shown(raw)} has more decimals than {code.upper()} allows ({allowed})")
    minor = int(whole + fraction.ljust(places, "0") or "0")
    if minor > MAX_MINOR:
        raise AmountError(f"{_shown(raw)} is too large")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units as a person reads them: 123456, "usd" -> "1,234.56 USD"; 12000, "jpy" -> "12,000 JPY"."""
    places = decimals(currency)
    major = Decimal(minor).scaleb(-places)
    return f"{major:,.{places}f} {currency.upper()}"


def _plain_number(text: str) -> str | None:
    """The number with grouping removed and "." as the decimal point, or None for an unknown shape."""
    for pattern, group_separator in _NUMBER_SHAPES:
        if pattern.fullmatch(text):
            if group_separator is None:
                return text
            decimal_separator = "." if group_separator == "," else ","
            return text.replace(group_separator, "").replace(decimal_separator, ".")
    return None


def _check_labels(raw: str, pre: str, post: str, code: str) -> None:
    """Allow a symbol and the currency's own code around the number ("US$ 5", "5 USD", "500円")."""
    for part, is_prefix in ((pre, True), (post, False)):
        part = "".join(part.split())
        letters = "".join(ch for ch in part if ch.isascii() and ch.isalpha())
        symbols = "".join(ch for ch in part if not (ch.isascii() and ch.isalpha()))
        for symbol in symbols:
            if unicodedata.category(symbol) != "Sc" and symbol not in _SYMBOL_CURRENCIES:
                raise AmountError(f"{_shown(raw)} is not an amount")
            if code not in _SYMBOL_CURRENCIES.get(symbol, {code}):
                raise AmountError(f"{_shown(raw)} does not look like {code.upper()}")
        if not letters or letters.lower() == code:
            continue
        # "US$", "A$", "HK$": letters before a symbol that start the currency's code.
        if is_prefix and symbols and code.startswith(letters.lower()):
            continue
        if symbols or len(letters) == 3:
            raise AmountError(f"{_shown(raw)} does not look like {code.upper()}")
        raise AmountError(f"{_shown(raw)} is not an amount")


def _shown(raw: str) -> str:
    """The cell as quoted in a message, cut short so a garbage cell cannot flood the report."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
