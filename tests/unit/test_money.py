"""Stripe's currency special cases: API amount <-> displayed text <-> typed text, with the docs' own examples.

Source: https://docs.stripe.com/currencies ("Specify amounts in API requests", "Zero-decimal currencies",
"Special cases", and the "Three-decimal currencies" section from earlier versions of the page). The comments
in handlers/money.py quote these sections.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.money import (
    STRIPE_ZERO_DECIMAL_LIST,
    THREE_DECIMAL,
    ZERO_DECIMAL,
    AmountError,
    charge_step,
    decimals,
    format_amount,
    to_minor_units,
)

# (currency, API amount, as displayed, as a person types it). Comments mark the docs' own examples.
CASES = [
    # "`1000` to charge 10 USD (or any other two-decimal currency)"; "enter 1099 to charge 10.99 USD".
    ("usd", 1000, "10.00 USD", "10"),
    ("usd", 1099, "10.99 USD", "10.99"),
    # "`10` to charge 10 JPY (or any other zero-decimal currency)"; "to charge 500 JPY, provide ... `500`".
    ("jpy", 10, "10 JPY", "10"),
    ("jpy", 500, "500 JPY", "500"),
    # UGX: "to charge 5 UGX, provide an `amount` value of `500`", on the zero-decimal list nonetheless.
    ("ugx", 500, "5 UGX", "5"),
    ("ugx", 500, "5 UGX", "5 UGX"),
    ("ugx", 500, "5 UGX", "5.00"),
    ("ugx", 100, "1 UGX", "1"),
    ("ugx", 5_000_000, "50,000 UGX", "50,000"),
    ("ugx", 5_000_000, "50,000 UGX", "50.000,00 UGX"),
    # ISK: "to charge 5 ISK, provide an `amount` value of `500`"; the support article says "an ISK amount of
    # `100` will continue to represent 1 króna".
    ("isk", 500, "5 ISK", "5"),
    ("isk", 100, "1 ISK", "1"),
    ("isk", 1_234_500, "12,345 ISK", "12,345 ISK"),
    # HUF: "an available balance of HUF 10.45 ... `1045`", "pay out HUF 10 by submitting `1000`". Two
    # decimals for charges; the whole-unit rule applies to payouts only.
    ("huf", 1045, "10.45 HUF", "10.45"),
    ("huf", 1000, "10.00 HUF", "10"),
    # TWD: "TWD 800.45 ... `80045`", "pay out TWD 800 by submitting `80000`".
    ("twd", 80045, "800.45 TWD", "800.45"),
    ("twd", 80000, "800.00 TWD", "800"),
    # Three-decimal: "5.124 KWD must be rounded to 5120 or 5130".
    ("kwd", 5120, "5.120 KWD", "5.12"),
    ("kwd", 5130, "5.130 KWD", "5.130"),
    ("bhd", 1250, "1.250 BHD", "1.25"),
    ("jod", 10, "0.010 JOD", "0.01"),
    ("omr", 1_000_000, "1,000.000 OMR", "1000"),
    ("tnd", 99_990, "99.990 TND", "99.990 TND"),
]


@pytest.mark.parametrize(("currency", "amount", "shown", "typed"), CASES)
def test_the_api_amount_is_displayed_as_people_read_it(currency, amount, shown, typed):
    assert format_amount(amount, currency) == shown


@pytest.mark.parametrize(("currency", "amount", "shown", "typed"), CASES)
def test_a_typed_amount_becomes_the_api_amount(currency, amount, shown, typed):
    assert to_minor_units(typed, currency) == amount


@pytest.mark.parametrize(("currency", "amount", "shown", "typed"), CASES)
def test_a_displayed_amount_reads_back_to_the_api_amount(currency, amount, shown, typed):
    assert to_minor_units(shown, currency) == amount


def test_the_zero_decimal_list_is_the_one_stripe_publishes():
    published = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
    assert sorted(code.upper() for code in STRIPE_ZERO_DECIMAL_LIST) == sorted(published.split(" "))
    assert sorted(ZERO_DECIMAL) == sorted(STRIPE_ZERO_DECIMAL_LIST - {"ugx"})
    assert sorted(THREE_DECIMAL) == ["bhd", "jod", "kwd", "omr", "tnd"]


@pytest.mark.parametrize("currency", sorted(ZERO_DECIMAL))
def test_every_zero_decimal_currency_counts_whole_units_in_the_api(currency):
    # "the charge and the amount are the same, without requiring multiplication"
    assert decimals(currency) == 0
    assert charge_step(currency) == 1
    assert format_amount(12000, currency) == f"12,000 {currency.upper()}"
    assert to_minor_units("12,000", currency) == 12000
    with pytest.raises(AmountError):
        to_minor_units("12.5", currency)


@pytest.mark.parametrize(
    ("currency", "places", "step"),
    [
        ("usd", 2, 1),
        ("jpy", 0, 1),
        ("ugx", 2, 100),
        ("UGX", 2, 100),
        ("isk", 2, 100),
        ("huf", 2, 1),
        ("twd", 2, 1),
        ("bhd", 3, 10),
        ("jod", 3, 10),
        ("kwd", 3, 10),
        ("omr", 3, 10),
        ("tnd", 3, 10),
    ],
)
def test_decimals_counts_the_api_amounts_decimals_and_charge_step_its_granularity(currency, places, step):
    assert decimals(currency) == places
    assert charge_step(currency) == step


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        # "You can't charge fractions of UGX" / "of ISK".
        ("5.50", "ugx", "'5.50' is not an amount Stripe can charge: it takes UGX in whole units only"),
        (
            "5.50 UGX",
            "ugx",
            "'5.50 UGX' is not an amount Stripe can charge: it takes UGX in whole units only",
        ),
        ("0.01", "isk", "'0.01' is not an amount Stripe can charge: it takes ISK in whole units only"),
        ("40.10", "isk", "'40.10' is not an amount Stripe can charge: it takes ISK in whole units only"),
        # Three decimals after a whole-unit amount might be a thousands group: refused, not guessed.
        ("5.000", "ugx", "'5.000' has more decimals than UGX allows (whole units only)"),
        # "these API calls require the least-significant (last) digit to be 0" (the docs' 5.124 KWD).
        (
            "5.124",
            "kwd",
            "'5.124' is not an amount Stripe can charge: it takes KWD only in steps of 0.010 "
            "(the last of three decimals must be 0)",
        ),
        ("5.1234", "kwd", "'5.1234' has more decimals than KWD allows (3 decimals)"),
        # HUF and TWD charges have two decimals, no more.
        ("10.455", "huf", "'10.455' has more decimals than HUF allows (2 decimals)"),
        ("800.455", "twd", "'800.455' has more decimals than TWD allows (2 decimals)"),
    ],
)
def test_amounts_stripe_cannot_charge_are_refused_in_one_line(text, currency, message):
    with pytest.raises(AmountError) as caught:
        to_minor_units(text, currency)

    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        # Before 2023-04-14 ISK charges could hold fractions ("a ISK 40.10 payment"); never round them away.
        (4010, "isk", "40.10 ISK"),
        (550, "ugx", "5.50 UGX"),
        (5124, "kwd", "5.124 KWD"),
        (-500, "ugx", "-5 UGX"),
        (0, "ugx", "0 UGX"),
    ],
)
def test_amounts_off_stripes_grid_are_still_displayed_exactly(amount, currency, shown):
    assert format_amount(amount, currency) == shown


def test_the_largest_ugx_amount_fits_stripes_twelve_digits():
    assert to_minor_units("9,999,999,999", "ugx") == 999_999_999_900
    with pytest.raises(AmountError, match="is too large"):
        to_minor_units("10,000,000,000", "ugx")


@given(
    steps=st.integers(min_value=0, max_value=9_999_999_999),
    currency=st.sampled_from(["usd", "ugx", "isk", "huf", "twd", *sorted(THREE_DECIMAL | ZERO_DECIMAL)]),
)
def test_every_chargeable_amount_reads_back_from_its_display(steps, currency):
    amount = steps * charge_step(currency)
    assert to_minor_units(format_amount(amount, currency), currency) == amount
