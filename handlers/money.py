"""Money as Stripe counts it: whole numbers of a currency's smallest unit, never floats."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

# Every list below comes from Stripe's "Supported currencies" page, https://docs.stripe.com/currencies. The
# quotes are the page's own words, so a reader can check them against it. Two things must not be mixed up:
# how many decimals the API `amount` has (`decimals`), and how people write the amount (always in whole
# units for ISK, UGX and the zero-decimal currencies).

# https://docs.stripe.com/currencies#zero-decimal: "For the following zero-decimal currencies, the charge
# and the amount are the same, without requiring multiplication. For example, to charge 500 JPY, provide an
# `amount` value of `500`." The list exactly as the page publishes it (UGX included):
_STRIPE_ZERO_DECIMAL_CODES = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
STRIPE_ZERO_DECIMAL_LIST = frozenset(_STRIPE_ZERO_DECIMAL_CODES.lower().split())

# https://docs.stripe.com/currencies#special-cases, ISK: "ISK transitioned to a zero-decimal currency, but
# backward compatibility requires you to represent it as a two-decimal value, where the decimal amount is
# always `00`. For example, to charge 5 ISK, provide an `amount` value of `500`. You can't charge fractions
# of ISK." UGX uses the same words ("to charge 5 UGX, provide an `amount` value of `500`. You can't charge
# fractions of UGX."). So UGX has two decimals in the API, even though it is on the zero-decimal list above.
# https://support.stripe.com/questions/deprecation-of-fractional-isk-charges-and-refunds says "ISK will
# remain a two-decimal currency in the Stripe API, and an ISK amount of `100` will continue to represent 1
# króna". Whole krónur are enforced only from 2023-04-14, so older ISK charges can still hold fractions.
WHOLE_UNITS_AS_TWO_DECIMALS = frozenset({"isk", "ugx"})

# Currencies whose API amount is in whole units: 12000 JPY is stored as 12000, not 1200000.
ZERO_DECIMAL = STRIPE_ZERO_DECIMAL_LIST - WHOLE_UNITS_AS_TWO_DECIMALS

# HUF and TWD are not special here. https://docs.stripe.com/currencies#special-cases says: "Stripe treats
# HUF [TWD] as a zero-decimal currency for payouts, even though you can charge two-decimal amounts. When you
# create a manual payout in HUF [TWD], you must provide integer amounts that are evenly divisible by 100"
# (HUF 10.45 is `1045`; TWD 800.45 is `80045`). This worker reads charges and refunds and never makes
# payouts, so both are ordinary two-decimal currencies here.

# https://docs.stripe.com/currencies#three-decimal, the page's "Three-decimal currencies" section (BHD, JOD,
# KWD, OMR, TND): "The API supports three-decimal currencies for the standard payment flows, including
# Payment Intents, Refunds, and Disputes. However, to ensure compatibility with Stripe's payments
# partners, these API calls require the least-significant (last) digit to be 0. Your integration must
# round amounts to the nearest ten. For example, 5.124 KWD must be rounded to 5120 or 5130."
# So the amount counts thousandths (1.250 KWD is 1250) and always ends in 0. Recent copies of the page no
# longer have this section (the page description still mentions three-decimal support). The rule above
# is the last one the page published.
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
    """How many decimals Stripe's API `amount` has in `currency`: 0 for JPY, 2 for USD and also for ISK
    and UGX (5 UGX is `500`), 3 for KWD. This is not how many decimals people may type: see
    `to_minor_units`."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def charge_step(currency: str) -> int:
    """The step between amounts Stripe accepts in a charge or refund, in API units: 100 for ISK and UGX
    (whole units only), 10 for the three-decimal currencies (last digit 0), and 1 for the rest."""
    code = currency.lower()
    if code in WHOLE_UNITS_AS_TWO_DECIMALS:
        return 100
    if code in THREE_DECIMAL:
        return 10
    return 1


def to_minor_units(text: str, currency: str) -> int:
    """Read an amount typed in major units ("$1,234.56", "¥12,000", "19.99") as Stripe's API amount.

    More decimals than the currency has are an error, not rounded: money must come out exact. People type
    ISK and UGX in whole units, and these come out times 100, as the API wants them ("5" UGX is 500).
    "5.00" is read too, but a fraction ("5.50") is refused, just as Stripe refuses it. A three-decimal
    amount whose last decimal is not 0 ("5.124" KWD) is refused the same way.
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
        if code in WHOLE_UNITS_AS_TWO_DECIMALS:
            allowed = "whole units only"
        else:
            allowed = f"{places} decimals" if places else "no decimals"
        raise AmountError(f"{_shown(raw)} has more decimals than {code.upper()} allows ({allowed})")
    minor = int(whole + fraction.ljust(places, "0") or "0")
    if minor % charge_step(code):
        if code in WHOLE_UNITS_AS_TWO_DECIMALS:
            rule = "in whole units only"
        else:
            rule = "only in steps of 0.010 (the last of three decimals must be 0)"
        raise AmountError(f"{_shown(raw)} is not an amount Stripe can charge: it takes {code.upper()} {rule}")
    if minor > MAX_MINOR:
        raise AmountError(f"{_shown(raw)} is too large")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Stripe's API amount as a person reads it: 123456, "usd" -> "1,234.56 USD"; 12000, "jpy" ->
    "12,000 JPY"; 500, "ugx" -> "5 UGX"; 5120, "kwd" -> "5.120 KWD".

    ISK and UGX are shown in whole units. If the amount holds a fraction (an ISK charge from before Stripe
    stopped accepting fractions), it is shown exactly, e.g. "40.10 ISK", and never rounded.
    """
    places = decimals(currency)
    major = Decimal(minor).scaleb(-places)
    if currency.lower() in WHOLE_UNITS_AS_TWO_DECIMALS and minor % 100 == 0:
        places = 0
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
