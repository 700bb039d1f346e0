"""The Stripe stand-in, seen through the real stripe-python 16.1.0 client over a real 127.0.0.1 socket."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest
import stripe

from stripe_standin import StandinServer, Store, require_loopback
from stripe_standin.generate import generate, populate
from stripe_standin.params import parse_query
from stripe_standin.server import NotLoopback

# stripe-python 16.1.0's HTTPXClient posts form bodies as `data=bytes`, which httpx 0.28 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

T0 = 1_763_000_000
PRE_BASIL = "2024-06-20"


@pytest.fixture(scope="module")
def server():
    with StandinServer(Store()) as running:
        yield running


@pytest.fixture
def store(server) -> Store:
    """A fresh store behind the shared server for every test, with no faults and no counted requests."""
    return server.reset(Store())


@pytest.fixture
def client(server, store) -> stripe.StripeClient:
    return server.client(max_network_retries=0)


def add_charges(store: Store, count: int, *, customer: str = "cus_1", start: int = T0) -> list[str]:
    ids = [f"ch_{n:05d}" for n in range(count)]
    store.add_many(
        {"id": charge_id, "object": "charge", "amount": 1000 + n, "currency": "jpy", "customer": customer,
         "payment_intent": f"pi_{n:05d}", "created": start + n * 60}
        for n, charge_id in enumerate(ids)
    )  # fmt: skip
    return ids


def add_installment_payment(store: Store, n: int = 1) -> None:
    """A subscription invoice paid by pi_/ch_, linked the basil way through an invoice_payment."""
    period = {"current_period_start": T0, "current_period_end": T0 + 30 * 86400}
    item = {"id": "si_plan", "object": "subscription_item", **period}
    items = {"object": "list", "data": [item], "has_more": False, "url": "/v1/subscription_items"}
    parent = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": "sub_plan"},
    }
    money = {"amount": 33000, "currency": "jpy", "customer": "cus_plan", "created": T0 + n}
    store.add({"id": "cus_plan", "object": "customer", "email": "plan@example.com", "created": T0})
    store.add(
        {"id": "sub_plan", "object": "subscription", "customer": "cus_plan", "created": T0, "items": items}
    )
    store.add({"id": f"pi_plan{n}", "object": "payment_intent", "latest_charge": f"ch_plan{n}", **money})
    store.add({"id": f"ch_plan{n}", "object": "charge", "payment_intent": f"pi_plan{n}", **money})
    store.add(
        {
            "id": f"in_plan{n}",
            "object": "invoice",
            "customer": "cus_plan",
            "status": "paid",
            "total": 33000,
            "currency": "jpy",
            "billing_reason": "subscription_create",
            "created": T0 + n,
            "parent": parent,
        }
    )
    store.add(
        {
            "id": f"inpay_plan{n}",
            "object": "invoice_payment",
            "invoice": f"in_plan{n}",
            "amount_requested": 33000,
            "currency": "jpy",
            "created": T0 + n,
            "payment": {"type": "payment_intent", "payment_intent": f"pi_plan{n}"},
        }
    )


# -- lists --------------------------------------------------------------------------------------------


def test_paging_250_charges_by_100_yields_all_newest_first_in_three_list_requests(server, store, client):
    ids = add_charges(store, 250)

    seen = [charge.id for charge in client.v1.charges.list(params={"limit": 100}).auto_paging_iter()]

    assert seen == ids[::-1]
    assert server.requests.count("GET", "/v1/charges") == math.ceil(250 / 100) == 3


def test_a_list_page_is_a_stripe_list_object_that_says_whether_more_follow(store, client):
    add_charges(store, 15)

    page = client.v1.charges.list()

    assert page.object == "list" and page.url == "/v1/charges"
    assert len(page.data) == 10 and page.has_more is True


def test_ending_before_pages_back_towards_newer_charges(store, client):
    ids = add_charges(store, 30)

    page = client.v1.charges.list(params={"limit": 5, "ending_before": ids[10]})

    assert [c.id for c in page.data] == ids[15:10:-1]
    assert page.has_more is True


def test_created_filters_keep_only_charges_inside_the_range(store, client):
    ids = add_charges(store, 20)  # one a minute from T0

    between = client.v1.charges.list(params={"created": {"gte": T0 + 5 * 60, "lt": T0 + 8 * 60}})
    after = client.v1.charges.list(params={"created": {"gt": T0 + 17 * 60}})
    exact = client.v1.charges.list(params={"created": T0 + 2 * 60})

    assert [c.id for c in between.data] == [ids[7], ids[6], ids[5]]
    assert [c.id for c in after.data] == [ids[19], ids[18]]
    assert [c.id for c in exact.data] == [ids[2]]


def test_filters_by_customer_and_cursor_work_together(store, client):
    mine = add_charges(store, 12, customer="cus_mine")
    store.add_many(
        {"id": f"ch_other{n}", "customer": "cus_other", "created": T0 + n * 60 + 30} for n in range(12)
    )

    first = client.v1.charges.list(params={"customer": "cus_mine", "limit": 5})
    second = client.v1.charges.list(
        params={"customer": "cus_mine", "limit": 5, "starting_after": first.data[-1].id}
    )

    back = client.v1.charges.list(
        params={"customer": "cus_mine", "limit": 3, "ending_before": second.data[0].id}
    )

    assert [c.id for c in first.data + second.data] == mine[::-1][:10]
    assert [c.id for c in back.data] == [c.id for c in first.data[-3:]]
    assert back.has_more is True


def test_ending_before_also_pages_back_through_a_wildcard_event_filter(store, client):
    for n in range(10):
        store.add_event("charge.succeeded", {"id": f"ch_{n}", "object": "charge"}, created=T0 + 2 * n)
        store.add_event("refund.created", {"id": f"re_{n}", "object": "refund"}, created=T0 + 2 * n + 1)
    oldest_first = [e.data.object.id for e in client.v1.events.list(params={"type": "charge.*"}).data][::-1]
    oldest = client.v1.events.list(params={"type": "charge.*", "limit": 1, "created": {"lte": T0}}).data[0]

    newer = client.v1.events.list(params={"type": "charge.*", "limit": 3, "ending_before": oldest.id})

    assert oldest_first == [f"ch_{n}" for n in range(10)]
    assert [e.data.object.id for e in newer.data] == ["ch_3", "ch_2", "ch_1"]
    assert newer.has_more is True


@pytest.mark.parametrize("limit", [0, 101])
def test_a_limit_outside_1_to_100_is_refused_like_stripe(store, client, limit):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.charges.list(params={"limit": limit})

    assert refused.value.http_status == 400
    assert refused.value.param == "limit"


def test_an_unknown_list_parameter_is_refused_with_its_name(store, client):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.charges.list(params={"colour": "red"})

    assert refused.value.param == "colour"
    assert "unknown parameter" in refused.value.user_message


def test_invoices_list_filters_by_status_and_subscription(store, client):
    add_installment_payment(store, 1)
    store.add({"id": "in_draft", "object": "invoice", "status": "draft", "created": T0 + 5})

    paid = client.v1.invoices.list(params={"status": "paid", "subscription": "sub_plan"})
    drafts = client.v1.invoices.list(params={"status": "draft"})

    assert [i.id for i in paid.data] == ["in_plan1"]
    assert [i.id for i in drafts.data] == ["in_draft"]


def test_events_list_filters_by_type(store, client):
    store.add_event("charge.refunded", {"id": "ch_1", "object": "charge"}, created=T0)
    store.add_event("refund.created", {"id": "re_1", "object": "refund", "charge": "ch_1"}, created=T0 + 1)

    refunds = client.v1.events.list(params={"type": "refund.created"})
    charges = client.v1.events.list(params={"type": "charge.*"})

    assert [e.data.object.id for e in refunds.data] == ["re_1"]
    assert [e.type for e in charges.data] == ["charge.refunded"]


# -- links between objects, expand, API versions ------------------------------------------------------


def test_an_invoice_payment_is_found_from_the_payment_intent_of_a_charge(store, client):
    add_installment_payment(store, 1)

    payments = client.v1.invoice_payments.list(
        params={
            "payment": {"type": "payment_intent", "payment_intent": "pi_plan1"},
            "expand": ["data.invoice"],
        }
    )

    (payment,) = payments.data
    assert payment.invoice.id == "in_plan1"
    assert payment.invoice.parent.subscription_details.subscription == "sub_plan"


def test_expand_on_a_list_replaces_each_customer_id_by_the_customer(store, client):
    store.add({"id": "cus_1", "object": "customer", "email": "buyer@example.com", "created": T0})
    add_charges(store, 3)

    page = client.v1.charges.list(params={"expand": ["data.customer"]})

    assert {c.customer.email for c in page.data} == {"buyer@example.com"}


def test_expand_follows_ids_up_to_four_levels_and_no_further(store, client):
    add_installment_payment(store, 1)

    page = client.v1.invoice_payments.list(
        params={"invoice": "in_plan1", "expand": ["data.invoice.customer", "data.payment.payment_intent"]}
    )
    charge = client.v1.charges.retrieve(
        "ch_plan1", params={"expand": ["payment_intent.latest_charge.customer"]}
    )
    with pytest.raises(stripe.InvalidRequestError) as too_deep:
        client.v1.invoice_payments.list(params={"expand": ["data.invoice.customer.default_source.x"]})

    assert page.data[0].invoice.customer.email == "plan@example.com"
    assert page.data[0].payment.payment_intent.latest_charge == "ch_plan1"
    assert charge.payment_intent.latest_charge.customer.id == "cus_plan"
    assert "4 levels" in too_deep.value.user_message


def test_expand_refunds_lists_the_refunds_of_a_charge(store, client):
    add_charges(store, 1)
    store.add({"id": "re_1", "object": "refund", "charge": "ch_00000", "amount": 500, "created": T0 + 10})

    plain = client.v1.charges.retrieve("ch_00000")
    expanded = client.v1.charges.retrieve("ch_00000", params={"expand": ["refunds"]})

    assert "refunds" not in plain
    assert [r.id for r in expanded.refunds.data] == ["re_1"]


def test_a_field_that_holds_no_id_cannot_be_expanded(store, client):
    add_charges(store, 1)

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.charges.retrieve("ch_00000", params={"expand": ["currency"]})

    assert "cannot be expanded" in refused.value.user_message


def test_the_newest_api_version_links_payments_through_invoice_payments_only(store, client):
    add_installment_payment(store, 1)

    charge = client.v1.charges.retrieve("ch_plan1")
    invoice = client.v1.invoices.retrieve("in_plan1")
    subscription = client.v1.subscriptions.retrieve("sub_plan")

    assert "invoice" not in charge
    assert not {"subscription", "charge", "payment_intent", "paid"} & set(invoice.to_dict())
    assert invoice.parent.subscription_details.subscription == "sub_plan"
    assert "current_period_end" not in subscription
    assert subscription["items"].data[0].current_period_end == T0 + 30 * 86400


def test_an_api_version_before_basil_sees_the_old_invoice_links(server, store):
    add_installment_payment(store, 1)
    old = server.client(stripe_version=PRE_BASIL)

    charge = old.v1.charges.retrieve("ch_plan1", params={"expand": ["invoice"]})
    invoice = old.v1.invoices.retrieve("in_plan1")
    subscription = old.v1.subscriptions.retrieve("sub_plan")

    assert charge.invoice.id == "in_plan1"
    assert charge.invoice.subscription == "sub_plan"
    assert (invoice.charge, invoice.payment_intent, invoice.paid) == ("ch_plan1", "pi_plan1", True)
    assert "parent" not in invoice
    assert invoice.lines.data[0].subscription == "sub_plan"
    assert subscription.current_period_end == T0 + 30 * 86400
    assert charge.last_response.headers["stripe-version"] == PRE_BASIL


def test_an_event_shows_its_object_in_the_events_own_api_version(store, client):
    add_installment_payment(store, 1)
    invoice = store.get("invoices", "in_plan1")
    store.add_event("invoice.paid", invoice, created=T0, api_version=PRE_BASIL, event_id="evt_old")

    event = client.v1.events.retrieve("evt_old")

    assert event.api_version == PRE_BASIL
    assert event.data.object.subscription == "sub_plan"
    assert event.data.object.charge == "ch_plan1"


# -- errors -------------------------------------------------------------------------------------------


def test_an_unknown_id_raises_invalid_request_error_with_resource_missing(store, client):
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.charges.retrieve("ch_missing")

    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    assert missing.value.user_message == "No such charge: 'ch_missing'"
    assert json.loads(missing.value.http_body)["error"]["param"] == "id"


def test_a_missing_or_live_api_key_is_refused_with_authentication_error(server, store):
    add_charges(store, 1)
    live = server.client("sk_live_1234567890abcdef")

    with pytest.raises(stripe.AuthenticationError) as refused:
        live.v1.charges.retrieve("ch_00000")
    bare = httpx.get(f"{server.url}/v1/charges/ch_00000")

    assert refused.value.http_status == 401
    assert bare.status_code == 401
    assert bare.json()["error"]["type"] == "invalid_request_error"


def test_an_unknown_url_is_a_404_invalid_request_error(store, client):
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.raw_request("get", "/v1/nothing_here")

    assert unknown.value.http_status == 404
    assert "Unrecognized request URL" in unknown.value.user_message


# -- faults -------------------------------------------------------------------------------------------


def test_a_queued_429_raises_rate_limit_error_with_retry_after_then_the_next_call_succeeds(
    server, store, client
):
    add_charges(store, 1)
    server.faults.add(kind="lock_timeout", path="/v1/charges", retry_after=2)

    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.charges.retrieve("ch_00000")
    charge = client.v1.charges.retrieve("ch_00000")

    assert limited.value.http_status == 429
    assert limited.value.json_body["error"]["code"] == "lock_timeout"
    assert limited.value.headers.get("retry-after") == "2"
    assert charge.id == "ch_00000"


def test_faults_only_hit_their_path_and_can_be_queued_over_http(server, store, client):
    add_charges(store, 1)
    response = httpx.post(
        f"{server.url}/_standin/faults",
        json={"kind": "unavailable", "path": "/v1/refunds", "count": 2, "should_retry": False},
    )

    charge = client.v1.charges.retrieve("ch_00000")
    with pytest.raises(stripe.APIError) as unavailable:
        client.v1.refunds.list()

    assert response.status_code == 201
    assert charge.id == "ch_00000"
    assert unavailable.value.http_status == 503
    assert unavailable.value.headers.get("stripe-should-retry") == "false"
    assert len(httpx.get(f"{server.url}/_standin/faults").json()["pending"]) == 1
    assert httpx.delete(f"{server.url}/_standin/faults").json() == {"pending": []}


def test_the_sdk_retries_a_500_and_the_request_count_shows_both_attempts(server, store):
    add_charges(store, 1)
    retrying = server.client(max_network_retries=2)
    server.faults.add(kind="api_error", path="/v1/charges/ch_00000")

    charge = retrying.v1.charges.retrieve("ch_00000")

    assert charge.id == "ch_00000"
    assert server.requests.count("GET", "/v1/charges/{id}") == 2


def test_a_delay_fault_makes_a_short_client_timeout_fail_with_a_connection_error(server, store):
    add_charges(store, 1)
    impatient = server.client(timeout=0.1, max_network_retries=0)
    server.faults.add(kind="delay", path="/v1/charges", delay=0.5)

    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.charges.retrieve("ch_00000")


def test_request_counts_are_served_over_http_by_method_and_path(server, store, client):
    add_charges(store, 1)
    client.v1.charges.retrieve("ch_00000")
    client.v1.charges.list()

    counts = httpx.get(f"{server.url}/_standin/requests").json()

    assert counts["total"] == 2
    assert counts["by_path"] == {"GET /v1/charges/ch_00000": 1, "GET /v1/charges": 1}
    assert counts["by_route"]["GET /v1/charges/{id}"] == 1


# -- POST /v1/customers/{id} --------------------------------------------------------------------------


def test_updating_customer_metadata_merges_keys_and_an_empty_value_removes_one(store, client):
    store.add({"id": "cus_1", "object": "customer", "metadata": {"a": "1", "b": "2"}, "created": T0})

    customer = client.v1.customers.update(
        "cus_1", params={"metadata": {"b": "", "note": "refunded 2025-11-01"}}
    )

    assert customer.metadata.to_dict() == {"a": "1", "note": "refunded 2025-11-01"}
    (event,) = client.v1.events.list(params={"type": "customer.updated"}).data
    assert event.data.previous_attributes.metadata.to_dict() == {"b": "2", "note": None}


def test_repeating_a_post_with_the_same_idempotency_key_replays_the_first_response(server, store, client):
    store.add({"id": "cus_1", "object": "customer", "created": T0})
    options = {"idempotency_key": "refund-note-re_1"}

    first = client.v1.customers.update("cus_1", params={"metadata": {"note": "x"}}, options=options)
    again = client.v1.customers.update("cus_1", params={"metadata": {"note": "x"}}, options=options)

    assert again.to_dict() == first.to_dict()
    assert again.last_response.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.last_response.headers
    assert store.count("events") == 1  # the replay changed nothing


def test_reusing_an_idempotency_key_with_other_params_raises_idempotency_error(store, client):
    store.add({"id": "cus_1", "object": "customer", "created": T0})
    options = {"idempotency_key": "same-key"}
    client.v1.customers.update("cus_1", params={"metadata": {"note": "x"}}, options=options)

    with pytest.raises(stripe.IdempotencyError) as reused:
        client.v1.customers.update("cus_1", params={"metadata": {"note": "y"}}, options=options)

    assert reused.value.http_status == 400
    assert store.get("customers", "cus_1")["metadata"] == {"note": "x"}


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{n}": "v" for n in range(51)},
        {"k" * 41: "v"},
        {"note": "v" * 501},
    ],
    ids=["51 keys", "41-character key", "501-character value"],
)
def test_metadata_beyond_stripes_limits_is_refused_and_the_customer_is_unchanged(store, client, metadata):
    store.add({"id": "cus_1", "object": "customer", "metadata": {"kept": "yes"}, "created": T0})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.update("cus_1", params={"metadata": metadata})

    assert refused.value.http_status == 400
    assert refused.value.param == "metadata"
    assert client.v1.customers.retrieve("cus_1").metadata.to_dict() == {"kept": "yes"}


def test_fifty_metadata_keys_of_forty_characters_with_500_character_values_are_accepted(store, client):
    store.add({"id": "cus_1", "object": "customer", "created": T0})
    metadata = {f"{n:02d}".ljust(40, "k"): "v" * 500 for n in range(50)}

    customer = client.v1.customers.update("cus_1", params={"metadata": metadata})

    assert len(customer.metadata.to_dict()) == 50


# -- generator, seeds, params, binding ----------------------------------------------------------------


def test_the_generator_is_deterministic_and_links_every_installment_payment(server, store):
    first = generate(2_000, seed=7)
    second = generate(2_000, seed=7)
    populate(store, 2_000, seed=7)
    old = server.client(stripe_version=PRE_BASIL)

    assert [c["id"] for c in first["charges"]] == [c["id"] for c in second["charges"]]
    assert len(first["charges"]) == store.count("charges") == 2_000
    assert first["invoice_payments"] and first["refunds"] and first["subscriptions"]
    charge_of = {c["payment_intent"]: c["id"] for c in first["charges"]}
    invoices = {i["id"] for i in first["invoices"]}
    paid = [(p["payment"]["payment_intent"], p["invoice"]) for p in first["invoice_payments"]]
    assert all(intent in charge_of and invoice in invoices for intent, invoice in paid)
    intent, invoice = paid[-1]
    assert old.v1.charges.retrieve(charge_of[intent]).invoice == invoice


def test_listing_stays_fast_with_100k_charges(store):
    store.add_many(
        {"id": f"ch_{n:06d}", "customer": f"cus_{n % 5000}", "created": T0 + n} for n in range(100_000)
    )
    started = time.perf_counter()

    for n in range(200):
        page, has_more = store.list("charges", limit=100, starting_after=f"ch_{n * 400 + 500:06d}")
        by_customer, _ = store.list("charges", where={"customer": f"cus_{n}"}, limit=100)

    assert has_more and len(page) == 100 and len(by_customer) == 20
    assert time.perf_counter() - started < 2.0  # measured: under 10 ms for all 400


def test_a_seed_file_loads_objects_by_collection(tmp_path, server, store):
    seed = tmp_path / "seed.json"
    document = {
        "customers": [{"id": "cus_s", "email": "s@example.com", "created": T0}],
        "charges": [{"id": "ch_s", "customer": "cus_s", "created": T0}],
    }
    seed.write_text(json.dumps(document))

    server.reset(Store.from_seed(seed))
    charge = server.client().v1.charges.retrieve("ch_s", params={"expand": ["customer"]})

    assert charge.customer.email == "s@example.com"


def test_bracket_parameters_decode_to_nested_objects_and_lists():
    decoded = parse_query(
        "created[gte]=5&expand[]=a&expand[]=b&expand[2]=c&payment[type]=payment_intent&limit=3"
    )

    assert decoded == {
        "created": {"gte": "5"},
        "expand": ["a", "b", "c"],
        "payment": {"type": "payment_intent"},
        "limit": "3",
    }


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "localhost"])
def test_the_stand_in_refuses_to_listen_anywhere_but_127_0_0_1(host):
    with pytest.raises(NotLoopback):
        require_loopback(host)
    with pytest.raises(NotLoopback):
        StandinServer(Store(), host=host)
