"""Connect: the nightly run lists each account in RECONCILE_ACCOUNTS with its `Stripe-Account` header,
stores each row with its account, resumes per account, and reports each account and their sum."""

import json
from collections import Counter

import pytest
import respx
from sqlmodel import select

from handlers.reconcile import RESOURCES
from models import Charge, Dispute, ReconcileRun, Subscription
from tests.sales_scenarios import DAY, T0
from tests.stripe_fixtures import charge
from tests.unit.test_reconcile import PagedStripe, stripe_reader
from tests.unit.test_reconcile_disputes_and_plans import alerts, nightly, stripe_dispute, stripe_subscription
from tests.unit.test_sales_cli import API
from worker import runtime
from worker.ops import cli
from worker.settings import Settings

SELLERS = ("acct_1SellerAiko", "acct_1SellerBen")


@pytest.fixture
def reader():
    return stripe_reader()


@pytest.fixture
def cli_db(worker_db, monkeypatch):
    """`python -m worker ...` on the test database, with Stripe at the respx stand-in's address."""
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("STRIPE_API_BASE", API)
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()
    yield worker_db
    runtime.get_settings.cache_clear()
    runtime.stripe_client.cache_clear()


def seller_objects(account: str, sales: int) -> dict[str, list[dict]]:
    """One connected seller's month: `sales` one-time charges, a dispute on the first, a subscription."""
    tag = account.removeprefix("acct_1Seller").lower()
    charges = [
        charge(
            f"ch_{tag}{i}",
            amount=2_000 + i,
            created=T0 + i * 60,
            customer=f"cus_{tag}",
            billing_details={"email": f"{tag}.buyer{i}@example.com"},
        )
        for i in range(sales)
    ]
    return {
        "charges": charges,
        "disputes": [stripe_dispute(f"dp_{tag}", f"ch_{tag}0", amount=2_000, created=T0 + DAY)],
        "subscriptions": [
            stripe_subscription(
                f"sub_{tag}", status="active", created=T0, period=(T0, T0 + 30 * DAY), customer=f"cus_{tag}"
            )
        ],
    }


def two_sellers() -> PagedStripe:
    return PagedStripe(
        {"charges": [charge("ch_platform_only", created=T0)]},  # the platform's: not asked for
        accounts={SELLERS[0]: seller_objects(SELLERS[0], 3), SELLERS[1]: seller_objects(SELLERS[1], 2)},
    )


def test_two_connect_accounts_are_listed_with_their_header_and_rows_carry_their_account(db, reader):
    stripe = two_sellers()
    report, _ = nightly(db, reader, stripe, accounts=list(SELLERS))

    asked = Counter((r.headers.get("Stripe-Account"), r.url.path) for r in stripe.requests)
    assert asked == {(account, resource.path): 1 for account in SELLERS for resource in RESOURCES}
    with db.session() as session:
        charges = {c.id: c.account for c in session.exec(select(Charge)).all()}
        disputes = {d.id: d.account for d in session.exec(select(Dispute)).all()}
        subscriptions = {s.id: s.account for s in session.exec(select(Subscription)).all()}
    assert charges == {
        "ch_aiko0": SELLERS[0],
        "ch_aiko1": SELLERS[0],
        "ch_aiko2": SELLERS[0],
        "ch_ben0": SELLERS[1],
        "ch_ben1": SELLERS[1],
    }
    assert disputes == {"dp_aiko": SELLERS[0], "dp_ben": SELLERS[1]}
    assert subscriptions == {"sub_aiko": SELLERS[0], "sub_ben": SELLERS[1]}
    assert sorted(a.customer_email for a in alerts(db)) == [
        "aiko.buyer0@example.com",
        "ben.buyer0@example.com",
    ]

    aiko, ben = (report["accounts"][account] for account in SELLERS)
    assert set(report["accounts"]) == set(SELLERS)
    assert (aiko["seen"], aiko["added"], aiko["api_calls"]) == (5, 5, len(RESOURCES))
    assert (ben["seen"], ben["added"], ben["api_calls"]) == (4, 4, len(RESOURCES))
    assert aiko["by_resource"]["charges"] == {"seen": 3, "added": 3}
    for field in ("seen", "added", "already_present", "missed_webhooks"):
        assert report["counts"][field] == aiko[field] + ben[field]
    assert report["api_calls"] == aiko["api_calls"] + ben["api_calls"] == stripe.calls
    assert {(f["id"], f["account"]) for f in report["found"]} == {(c, a) for c, a in charges.items()}


def test_the_platform_account_is_listed_without_the_header_when_no_accounts_are_set(db, reader):
    stripe = two_sellers()
    report, _ = nightly(db, reader, stripe)

    assert {r.headers.get("Stripe-Account") for r in stripe.requests} == {None}
    assert list(report["accounts"]) == ["platform"]
    with db.session() as session:
        assert [(c.id, c.account) for c in session.exec(select(Charge)).all()] == [("ch_platform_only", "")]
    assert [f["account"] for f in report["found"]] == ["platform"]


def test_a_run_that_dies_in_the_second_account_resumes_there_without_listing_the_first_again(db, reader):
    stripe = two_sellers()
    stripe.fail_after = len(RESOURCES) + 1  # the first seller and the second's invoice payments
    with pytest.raises(Exception, match="down"):
        nightly(db, reader, stripe, accounts=list(SELLERS))
    with db.session() as session:
        cursors = json.loads(session.exec(select(ReconcileRun)).one().cursors)
    assert {key for key, value in cursors.items() if value == "complete"} == {
        *(f"{SELLERS[0]}:{resource.name}" for resource in RESOURCES),
        f"{SELLERS[1]}:invoice_payments",
    }

    stripe.fail_after, stripe.requests = None, []
    report, _ = nightly(db, reader, stripe, accounts=list(SELLERS))
    assert {r.headers.get("Stripe-Account") for r in stripe.requests} == {SELLERS[1]}
    assert len(stripe.requests) == len(RESOURCES) - 1
    assert report["accounts"][SELLERS[1]]["added"] == 4 and report["accounts"][SELLERS[0]]["added"] == 5


# --- RECONCILE_ACCOUNTS ------------------------------------------------------------------------------------


def test_reconcile_accounts_empty_means_the_platform_and_ids_are_read_in_order_once():
    assert Settings().reconcile_account_ids() == [""]
    assert Settings(reconcile_accounts=" , ").reconcile_account_ids() == [""]
    assert Settings(reconcile_accounts="acct_1B, acct_1A,acct_1B").reconcile_account_ids() == [
        "acct_1B",
        "acct_1A",
    ]


@pytest.mark.parametrize("value", ["acct_1A;acct_1B", "acct_1A,acct 1B", "acct_1A,1B", "acct_"])
def test_a_malformed_account_id_is_a_one_line_error_naming_the_setting(value):
    with pytest.raises(ValueError, match="^RECONCILE_ACCOUNTS: ") as raised:
        Settings(reconcile_accounts=value).reconcile_account_ids()
    assert "\n" not in str(raised.value)


def test_reconcile_with_a_malformed_account_says_so_in_one_line_and_asks_stripe_nothing(
    cli_db, capsys, monkeypatch
):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_cli_reconcile")
    monkeypatch.setenv("RECONCILE_ACCOUNTS", "acct_1SellerAiko,sk_test_pasted_here")
    runtime.get_settings.cache_clear()
    with respx.mock:  # any request to Stripe would fail the test
        assert cli.main(["reconcile"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("RECONCILE_ACCOUNTS: entry 2 is not a Stripe account id") and "\n" not in err
    assert "sk_test_pasted_here" not in err


def test_reconcile_json_with_two_accounts_keeps_its_fields_and_adds_accounts_and_found(
    cli_db, capsys, monkeypatch
):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_cli_reconcile")
    monkeypatch.setenv("RECONCILE_ACCOUNTS", ",".join(SELLERS))
    runtime.get_settings.cache_clear()
    stripe = two_sellers()
    with respx.mock:
        respx.route(host="127.0.0.1", port=12111).mock(side_effect=stripe)
        code = cli.main(["reconcile", "--since", "2026-09-01", "--until", "2026-12-01", "--json"])
    report = json.loads(capsys.readouterr().out)

    assert code == 0
    assert {"run_id", "window", "counts", "api_calls", "totals", "discrepancies"} <= set(report)
    assert set(report["accounts"]) == set(SELLERS)
    assert report["api_calls"] == 2 * len(RESOURCES) == stripe.calls
    assert report["found_count"] == 5 and {f["account"] for f in report["found"]} == set(SELLERS)
    assert report["totals"]["usd"]["added"] == sum(2_000 + i for i in range(3)) + sum(
        2_000 + i for i in range(2)
    )

    with respx.mock:
        respx.route(host="127.0.0.1", port=12111).mock(side_effect=two_sellers())
        assert cli.main(["reconcile", "--since", "2026-09-01", "--until", "2026-12-01"]) == 0
    out = capsys.readouterr().out
    assert f"  {SELLERS[0]}: seen 5  added 0" in out  # the second run: everything already present
    assert "Payments this run added: 0" in out


def test_the_human_report_names_the_account_of_each_found_payment(cli_db, capsys, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_cli_reconcile")
    monkeypatch.setenv("RECONCILE_ACCOUNTS", ",".join(SELLERS))
    runtime.get_settings.cache_clear()
    with respx.mock:
        respx.route(host="127.0.0.1", port=12111).mock(side_effect=two_sellers())
        assert cli.main(["reconcile", "--since", "2026-09-01", "--until", "2026-12-01"]) == 0
    out = capsys.readouterr().out
    assert (
        f"charge ch_ben1 on {SELLERS[1]} (one-time payment, ben.buyer1@example.com, 20.01 USD):"
        " its webhook never arrived"
    ) in out
    assert "Per account:" in out
