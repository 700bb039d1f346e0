"""ClickFunnels 1.0 purchase webhooks read into funnel purchase rows, including bodies nobody should send."""

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.funnel import (
    FunnelPayloadError,
    funnel_event_id,
    funnel_event_type,
    normalise_email,
    purchase_rows,
)
from models.sales import FunnelPurchase

DATA = Path(__file__).parent.parent / "data"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def purchase(**fields) -> dict:
    """A small flat purchase of one $19.99 product, with `fields` replacing its own."""
    body = {
        "id": 1001,
        "products": [{"id": 11, "name": "Ebook", "amount": {"cents": 1999, "currency_iso": "USD"}}],
        "contact": {"email": "buyer@example.com", "first_name": "Ann", "last_name": "Lee"},
        "created_at": "2026-11-01T10:00:00Z",
        "updated_at": "2026-11-01T10:00:00Z",
        "status": "paid",
    }
    body.update(fields)
    return body


def product(**fields) -> dict:
    return {"id": 11, "name": "Ebook", "amount": {"cents": 1999, "currency_iso": "USD"}, **fields}


def only_row(body) -> dict:
    rows = purchase_rows(body)
    assert len(rows) == 1
    return rows[0]


# Realistic payloads.


def test_a_three_payment_plan_wrapped_in_an_event_becomes_one_row_of_three_installments():
    assert purchase_rows(load("funnel_payment_plan.json")) == [
        {
            "purchase_id": "21918163",
            "product_key": "2178221",
            "product_name": "Online Course - 3 Payments",
            "amount": 33300,
            "currency": "usd",
            "customer_email": "taro.yamada@example.com",
            "customer_name": "Taro Yamada",
            "stripe_plan": "cf_course_3pay",
            "installments_total": 3,
            "is_subscription": True,
            "subscription_id": "sub_1QxYzAbCdEfGhIjKlMn",
            "charge_id": "pi_3QxYzAbCdEfGhIjK0aBcDeFg",
            "status": "paid",
            "purchased_at": datetime(2026, 11, 1, 15, 0, tzinfo=UTC),
            "origin": "webhook",
            "version": int(datetime(2026, 11, 1, 15, 0, 5, tzinfo=UTC).timestamp()),
        }
    ]


def test_a_flat_subscription_that_never_ends_is_a_subscription_without_an_installment_count():
    row = only_row(load("funnel_subscription.json"))

    assert row["purchase_id"] == "31000457"
    assert row["is_subscription"] is True
    assert row["installments_total"] is None  # stripe_cancel_after_payments = 50000000 means "never"
    assert row["stripe_plan"] == "cf_club_monthly"
    assert row["charge_id"] == "ch_3QaBcDeFgHiJkLmN1xYz"
    assert row["version"] == int(datetime(2026, 11, 15, 0, 30, 2, tzinfo=UTC).timestamp())


def test_a_one_time_product_with_an_order_bump_gives_one_plain_row_per_product():
    rows = purchase_rows(load("funnel_one_time_with_bump.json"))

    assert [(r["product_key"], r["product_name"], r["amount"], r["currency"]) for r in rows] == [
        ("2178300", "Seminar Recording", 12000, "jpy"),
        ("2178301", "Workbook (order bump)", 3000, "jpy"),
    ]
    assert all(r["is_subscription"] is False and r["installments_total"] is None for r in rows)
    assert all(r["stripe_plan"] is None for r in rows)  # an empty stripe_plan is no plan
    assert {r["purchased_at"] for r in rows} == {datetime(2026, 11, 2, 0, 15, tzinfo=UTC)}
    assert {r["customer_name"] for r in rows} == {"Jiro"}


def test_a_payment_intent_id_in_charge_id_is_kept_and_other_gateways_ids_are_dropped():
    assert only_row(purchase(charge_id="pi_3AbC"))["charge_id"] == "pi_3AbC"
    assert only_row(purchase(charge_id="ch_3AbC"))["charge_id"] == "ch_3AbC"
    assert only_row(purchase(charge_id="8f14e45fceea167a5a36dedd4bea2543"))["charge_id"] is None
    assert only_row(purchase(charge_id=12345))["charge_id"] is None


def test_a_hex_subscription_id_from_another_gateway_is_ignored():
    row = only_row(purchase(subscription_id="5f3c2a9e8b7d4c1a"))

    assert row["subscription_id"] is None
    assert only_row(purchase(subscription_id=" sub_1Q "))["subscription_id"] == "sub_1Q"


@pytest.mark.parametrize(
    ("count", "expected"),
    [(3, 3), ("6", 6), (12.0, 12), (1, 1), (999, 999), (1000, None), (50000000, None), (0, None),
     (-3, None), (None, None), ("three", None), (True, None)],
)  # fmt: skip
def test_only_a_short_payment_count_makes_a_payment_plan(count, expected):
    row = only_row(purchase(products=[product(stripe_plan="plan_x", stripe_cancel_after_payments=count)]))

    assert row["installments_total"] == expected
    assert row["is_subscription"] is True


def test_a_payment_count_without_a_stripe_plan_is_not_a_payment_plan():
    row = only_row(purchase(products=[product(stripe_cancel_after_payments=3)]))

    assert (row["is_subscription"], row["installments_total"]) == (False, None)


def test_the_email_is_read_from_the_purchase_when_the_contact_has_none():
    assert only_row(purchase(contact={"first_name": "Ann"}, email=" Ann@Example.COM"))["customer_email"] == (
        "ann@example.com"
    )
    assert only_row(purchase(contact=None, email="not an email"))["customer_email"] is None


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("2026-11-01T10:00:00.000-05:00", datetime(2026, 11, 1, 15, 0, tzinfo=UTC)),
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, 0, tzinfo=UTC)),
        ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, 0, tzinfo=UTC)),  # naive: read as UTC
        ("2026-11-01 10:00:00 UTC", datetime(2026, 11, 1, 10, 0, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_the_purchase_time_is_stored_in_utc(created_at, expected):
    row = only_row(purchase(created_at=created_at, updated_at=None))

    assert row["purchased_at"] == expected
    assert row["version"] == (int(expected.timestamp()) if expected else 0)


def test_the_version_is_updated_at_so_a_later_update_wins():
    created = only_row(purchase(created_at="2026-11-01T10:00:00Z", updated_at="2026-11-01T10:00:00Z"))
    updated = only_row(purchase(created_at="2026-11-01T10:00:00Z", updated_at="2026-11-03T08:00:00+09:00"))

    assert updated["version"] == int(datetime(2026, 11, 2, 23, 0, tzinfo=UTC).timestamp())
    assert updated["version"] > created["version"]
    assert updated["purchased_at"] == created["purchased_at"]


@pytest.mark.parametrize("cents", [1999, 1999.0, "1999", " 1999 ", "1999.00"])
def test_cents_may_come_as_an_integer_a_whole_float_or_a_numeric_string(cents):
    assert (
        only_row(purchase(products=[product(amount={"cents": cents, "currency_iso": "usd"})]))["amount"]
        == 1999
    )


def test_a_free_product_is_recorded_at_zero():
    assert only_row(purchase(products=[product(amount={"cents": 0, "currency_iso": "USD"})]))["amount"] == 0


def test_the_status_is_stored_in_lower_case():
    assert only_row(purchase(status="Paid"))["status"] == "paid"


def test_rows_can_be_marked_as_imported_but_not_as_anything_else():
    assert purchase_rows(purchase(), origin="import")[0]["origin"] == "import"
    with pytest.raises(ValueError, match="origin"):
        purchase_rows(purchase(), origin="email")


def test_the_same_product_twice_in_one_order_stays_two_sales():
    rows = purchase_rows(purchase(products=[product(), product()]))

    assert [r["product_key"] for r in rows] == ["11", "11#2"]
    assert sum(r["amount"] for r in rows) == 3998


def test_a_product_without_a_name_is_named_by_placeholder_and_keyed_by_its_id():
    row = only_row(purchase(products=[{"id": 77, "amount": {"cents": 500, "currency_iso": "USD"}}]))

    assert (row["product_key"], row["product_name"]) == ("77", "(unnamed product)")


def test_a_product_without_an_id_is_keyed_by_its_name():
    row = only_row(purchase(products=[{"name": "Ebook", "amount": {"cents": 500, "currency_iso": "USD"}}]))

    assert (row["product_key"], row["product_name"]) == ("Ebook", "Ebook")


def test_a_purchase_without_products_is_kept_under_a_placeholder_priced_by_its_original_amount():
    row = only_row(
        purchase(products=[], original_amount={"cents": 9700, "currency_iso": "EUR"}, subscription_id="sub_9")
    )

    assert (row["product_key"], row["product_name"]) == ("(unnamed product)", "(unnamed product)")
    assert (row["amount"], row["currency"]) == (9700, "eur")
    assert (row["is_subscription"], row["installments_total"]) == (True, None)


def test_a_product_without_a_currency_takes_the_original_amounts():
    body = purchase(
        products=[product(amount={"cents": 1500})], original_amount={"cents": 1500, "currency_iso": "GBP"}
    )

    assert only_row(body)["currency"] == "gbp"


def test_rows_have_exactly_the_funnel_purchase_columns_except_updated_at():
    columns = {column.name for column in FunnelPurchase.__table__.columns} - {"updated_at"}

    for name in ("funnel_payment_plan.json", "funnel_subscription.json", "funnel_one_time_with_bump.json"):
        for row in purchase_rows(load(name)):
            assert set(row) == columns


def test_rows_can_be_stored_and_read_back_from_the_funnel_purchases_table(db):
    rows = [
        *purchase_rows(load("funnel_payment_plan.json")),
        *purchase_rows(load("funnel_one_time_with_bump.json")),
    ]
    with db.session() as session:
        session.add_all(FunnelPurchase(**row) for row in rows)
        session.commit()
    with db.session() as session:
        stored = session.get(FunnelPurchase, ("21918163", "2178221"))
        assert (stored.amount, stored.installments_total, stored.purchased_at) == (
            33300,
            3,
            datetime(2026, 11, 1, 15, 0, tzinfo=UTC),
        )


# Bodies nobody should send: each is refused with a message a seller can read, or stored as plain data.


@pytest.mark.parametrize("body", [[], "purchase", None, 42, {"purchase": "x"}])
def test_a_body_that_is_not_a_purchase_object_is_refused(body):
    with pytest.raises(FunnelPayloadError, match="not a JSON object|not an object"):
        purchase_rows(body)


@pytest.mark.parametrize("purchase_id", [None, "", "   ", True, 1.5, {"id": 1}, [], "x" * 256, "12\n34"])
def test_a_purchase_without_a_usable_id_is_refused(purchase_id):
    with pytest.raises(FunnelPayloadError, match="purchase (has no id|id is malformed)"):
        purchase_rows(purchase(id=purchase_id))


def test_a_purchase_missing_its_id_key_is_refused():
    body = purchase()
    del body["id"]
    with pytest.raises(FunnelPayloadError, match="the purchase has no id"):
        purchase_rows({"event": "created", "purchase": body})


@pytest.mark.parametrize(
    "cents",
    ["12.5", 12.5, -1, "-1", math.nan, math.inf, "NaN", "1e3", "", None, True, [], {}, "1_000", 10**30, 2**63,
     pytest.param(10**5000, id="5000-digit int"), "１２"],
)  # fmt: skip
def test_an_amount_that_is_not_whole_non_negative_cents_is_refused(cents):
    with pytest.raises(
        FunnelPayloadError, match=r"purchase 1001: product 1 amount (.* is not a whole|has no cents)"
    ):
        purchase_rows(purchase(products=[product(amount={"cents": cents, "currency_iso": "USD"})]))


def test_a_product_without_an_amount_is_refused():
    with pytest.raises(FunnelPayloadError, match="purchase 1001: product 2 amount is missing"):
        purchase_rows(purchase(products=[product(), {"id": 12, "name": "Bonus"}]))


@pytest.mark.parametrize("currency", ["US", "dollars", 840, "", "u$d"])
def test_an_unreadable_currency_is_refused(currency):
    with pytest.raises(FunnelPayloadError, match="has no valid currency"):
        purchase_rows(purchase(products=[product(amount={"cents": 100, "currency_iso": currency})]))


def test_an_amount_without_any_currency_is_refused():
    with pytest.raises(FunnelPayloadError, match="product 1 amount has no valid currency"):
        purchase_rows(purchase(products=[product(amount={"cents": 100})]))


def test_a_purchase_without_products_or_original_amount_is_refused():
    with pytest.raises(FunnelPayloadError, match="original_amount is missing"):
        purchase_rows(purchase(products=[]))


def test_a_product_with_neither_name_nor_id_is_refused():
    with pytest.raises(FunnelPayloadError, match="product 1 has neither a name nor an id"):
        purchase_rows(purchase(products=[{"name": " \x00 ", "amount": {"cents": 1, "currency_iso": "USD"}}]))


def test_products_that_are_not_a_list_of_objects_are_refused():
    with pytest.raises(FunnelPayloadError, match="'products' is not a list"):
        purchase_rows(purchase(products={"id": 1}))
    with pytest.raises(FunnelPayloadError, match="product 1 is not an object"):
        purchase_rows(purchase(products=["Ebook"]))


def test_a_thousand_products_are_refused_but_fifty_are_accepted():
    many = [product(id=i) for i in range(1000)]
    with pytest.raises(FunnelPayloadError, match="1000 products; at most 50 are accepted"):
        purchase_rows(purchase(products=many))

    assert len(purchase_rows(purchase(products=many[:50]))) == 50


@pytest.mark.parametrize(
    "name",
    [
        "Robert'); DROP TABLE funnel_purchases;--",
        "1' OR '1'='1",
        "講座 🎓 Ünïcödé",
        "\u202eevil\u202c",
        "<b>x</b>",
    ],
)
def test_sql_looking_or_unusual_names_are_stored_exactly_as_they_came(name):
    row = only_row(purchase(products=[product(name=name)], contact={"first_name": name, "email": "a@b.co"}))

    assert row["product_name"] == name
    assert row["customer_name"] == name


def test_control_characters_are_removed_from_names_but_tabs_are_kept():
    row = only_row(
        purchase(products=[product(name="Eb\x00o\x07ok\tPro\x1b")], contact={"first_name": "A\nnn"})
    )

    assert row["product_name"] == "Ebook\tPro"
    assert row["customer_name"] == "A nn"


def test_long_text_is_cut_to_the_column_length():
    row = only_row(purchase(products=[product(name="n" * 900, stripe_plan="p" * 900)], status="s" * 100))

    assert (len(row["product_name"]), len(row["stripe_plan"]), len(row["status"])) == (500, 255, 64)


def test_reading_a_body_does_not_change_it():
    body = load("funnel_payment_plan.json")
    before = copy.deepcopy(body)
    purchase_rows(body)

    assert body == before


# Event log ids and types.


def test_an_identical_redelivery_has_the_same_event_id_and_any_change_gives_a_new_one():
    raw = (DATA / "funnel_payment_plan.json").read_bytes()

    assert funnel_event_id(raw) == funnel_event_id(bytes(raw))
    assert funnel_event_id(raw).startswith("cfevt_") and len(funnel_event_id(raw)) == 6 + 32
    assert funnel_event_id(raw) != funnel_event_id(raw.replace(b"paid", b"refunded"))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"event": "created", "purchase": {}}, "funnel.purchase.created"),
        ({"event": "updated", "id": 1}, "funnel.purchase.updated"),
        ({"event": "Refunded"}, "funnel.purchase.refunded"),
        # A closed set: the body is unsigned, and types become metric labels and log fields.
        ({"event": "Order Refunded!"}, "funnel.purchase.other"),
        ({"event": "x" * 100}, "funnel.purchase.other"),
        ({"event": "💥"}, "funnel.purchase.updated"),
        ({"event": ""}, "funnel.purchase.updated"),
        ({"event": 7}, "funnel.purchase.updated"),
        ({"id": 1}, "funnel.purchase.updated"),
        ("not a dict", "funnel.purchase.updated"),
    ],
)
def test_the_event_type_names_the_funnel_event_in_safe_characters(payload, expected):
    assert funnel_event_type(payload) == expected


# Emails.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" Taro.Yamada@Example.COM ", "taro.yamada@example.com"),
        ("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ", "taro@example.jp"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
        ("", None),
        (None, None),
        (42, None),
        ("no-at-sign.example.com", None),
        ("two@@example.com", None),
        ("a@b@example.com", None),
        ("@example.com", None),
        ("taro@localhost", None),
        ("taro@.com", None),
        ("taro@example.", None),
        ("taro yamada@example.com", None),
        ("taro@exa\x00mple.com", None),
        ("a" * 310 + "@example.com", None),
    ],
)
def test_emails_are_trimmed_and_lower_cased_or_rejected(value, expected):
    assert normalise_email(value) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


ids = st.integers(min_value=1, max_value=10**12) | st.from_regex(r"[0-9a-z_]{1,40}", fullmatch=True)


def mostly(valid):
    """Usually a plausible value, sometimes any JSON at all."""
    return st.integers(0, 9).flatmap(lambda n: json_values if n == 0 else valid)


products = st.lists(
    st.fixed_dictionaries(
        {
            "amount": st.fixed_dictionaries(
                {
                    "cents": mostly(
                        st.integers(min_value=0, max_value=10**13)
                        | st.from_regex(r"[0-9]{1,14}", fullmatch=True)
                    ),
                    "currency_iso": mostly(st.sampled_from(["USD", "jpy", " eur "])),
                }
            )
        },
        optional={
            "id": mostly(ids),
            "name": mostly(st.text(max_size=600)),
            "stripe_plan": mostly(st.text(max_size=300)),
            "stripe_cancel_after_payments": mostly(st.integers()),
        },
    ),
    max_size=3,
)
purchases = st.fixed_dictionaries(
    {"id": mostly(ids), "products": mostly(products)},
    optional={
        "contact": json_values,
        "email": mostly(st.emails()),
        "subscription_id": mostly(st.text(max_size=20)),
        "charge_id": mostly(st.text(max_size=20)),
        "status": json_values,
        "created_at": mostly(st.datetimes().map(datetime.isoformat)),
        "updated_at": mostly(st.datetimes(timezones=st.timezones()).map(datetime.isoformat)),
        "original_amount": json_values,
    },
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(body=purchases | st.fixed_dictionaries({"event": json_values, "purchase": purchases}) | json_values)
def test_any_json_body_gives_rows_that_fit_the_table_or_a_readable_refusal(body):
    try:
        rows = purchase_rows(body)
    except FunnelPayloadError as exc:
        assert 0 < len(str(exc)) < 200
        return
    for row in rows:
        assert isinstance(row["amount"], int) and row["amount"] >= 0
        assert len(row["currency"]) == 3 and row["currency"].isalpha()
        assert 0 < len(row["purchase_id"]) <= 255 and 0 < len(row["product_key"]) <= 255
        assert 0 < len(row["product_name"]) <= 500
        assert row["purchased_at"] is None or row["purchased_at"].tzinfo is not None


@pytest.mark.parametrize(
    "typed, stored",
    [
        (" Taro@Example.JP ", "taro@example.jp"),
        ("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ", "taro@example.jp"),  # typed on a Japanese keyboard
        ("taro@example.jp\u3000", "taro@example.jp"),  # a trailing ideographic space
        ("ta ro@example.jp", None),
        ("taro@exa\x1fmple.jp", None),  # a unit separator (isspace() in Python)
        ("taro@example.jp\x7f", None),
        ("taro\u200b@example.jp", "taro\u200b@example.jp"),  # a zero-width space is neither space nor Cc
        ("taro@@example.jp", None),
        ("taro@localhost", None),
    ],
)
def test_an_email_is_matched_by_its_trimmed_lower_case_ascii_form_and_refused_with_spaces_or_controls(
    typed, stored
):
    from handlers.funnel import normalise_email

    assert normalise_email(typed) == stored


def test_every_ascii_character_is_refused_in_an_email_exactly_when_the_unicode_rule_refuses_it():
    import unicodedata

    from handlers.funnel import normalise_email

    for character in (chr(code) for code in range(128) if chr(code) != "@"):  # a second @ is refused anyway
        refused = character.isspace() or unicodedata.category(character) == "Cc"
        assert (normalise_email(f"ta{character}ro@example.jp") is None) == refused, repr(character)
