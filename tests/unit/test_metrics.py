"""`GET /metrics`: webhook counters from the receiver, processing figures from the event log and Redis."""

import json
import math
import time
from datetime import timedelta

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from models import Event
from models.types import utcnow
from tests.sales_scenarios import funnel_purchase
from tests.stripe_fixtures import TEST_SECRET, charge, event, signed
from tests.unit.test_receiver import RecordingQueue
from worker.ops import metrics
from worker.receiver.signature import sign
from worker.receiver.web import create_app

TOKEN = "cf-token-0123456789abcdef"
WEBHOOKS = "stripe_worker_webhooks_total"


def make_client(db, queue_depths=lambda: {"alerts": 0, "events": 3}):
    app = create_app(
        db=db,
        enqueue=RecordingQueue(),
        secrets=[TEST_SECRET],
        max_body_bytes=64 * 1024,
        funnel_token=TOKEN,
        queue_depths=queue_depths,
    )
    return TestClient(app)


def scrape(client) -> dict[str, float]:
    """Every sample on /metrics, by its name and labels exactly as printed."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == metrics.CONTENT_TYPE
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def webhooks(endpoint: str, outcome: str, reason: str = "") -> str:
    # reason="" (accepted, duplicate) is the same series to Prometheus as no reason label at all.
    return f'{WEBHOOKS}{{endpoint="{endpoint}",outcome="{outcome}",reason="{reason}"}}'


def add_event(db, event_id, status, *, age, event_type="charge.succeeded", took=None):
    received = utcnow() - timedelta(seconds=age)
    with db.session() as session:
        session.add(
            Event(
                id=event_id,
                type=event_type,
                payload="{}",
                status=status,
                received_at=received,
                processed_at=received + timedelta(seconds=took) if took is not None else None,
            )
        )


def test_accepted_duplicate_and_rejected_webhooks_are_counted_by_endpoint_outcome_and_reason(db):
    client = make_client(db)
    first, headers = signed(event("charge.succeeded", charge(), event_id="evt_m1"))
    second, second_headers = signed(event("charge.refunded", charge(), event_id="evt_m2"))
    stale, stale_headers = signed(event("charge.succeeded", charge()), timestamp=int(time.time()) - 400)
    not_event = json.dumps({"object": "charge", "id": "ch_1"}).encode()
    huge, huge_headers = signed(event("charge.succeeded", charge(description="x" * 70_000)))

    for body, sent_headers in [
        (first, headers),
        (first, headers),  # Stripe delivering the same event again
        (second, second_headers),
        (first, {"Stripe-Signature": sign(first, "whsec_someone_else")}),
        (first, {}),
        (stale, stale_headers),
        (b"{oops", {"Stripe-Signature": sign(b"{oops", TEST_SECRET)}),
        (not_event, {"Stripe-Signature": sign(not_event, TEST_SECRET)}),
        (huge, huge_headers),
    ]:
        client.post("/webhooks/stripe", content=body, headers=sent_headers)
    client.post(f"/webhooks/funnel/{TOKEN}", json=funnel_purchase())
    client.post("/webhooks/funnel/wrong-token-0123456789", json=funnel_purchase())
    client.post(f"/webhooks/funnel/{TOKEN}", content=b"{not json")

    samples = scrape(client)
    assert samples[webhooks("stripe", "accepted")] == 2
    assert samples[webhooks("stripe", "duplicate")] == 1
    assert samples[webhooks("stripe", "rejected", "bad_signature")] == 2
    assert samples[webhooks("stripe", "rejected", "stale_timestamp")] == 1
    assert samples[webhooks("stripe", "rejected", "malformed")] == 1
    assert samples[webhooks("stripe", "rejected", "not_an_event")] == 1
    assert samples[webhooks("stripe", "rejected", "too_large")] == 1
    assert samples[webhooks("stripe", "rejected", "db_unavailable")] == 0
    assert samples[webhooks("funnel", "accepted")] == 1
    assert samples[webhooks("funnel", "rejected", "bad_token")] == 1
    assert samples[webhooks("funnel", "rejected", "malformed")] == 1


def test_a_webhook_refused_because_the_database_is_down_is_counted_as_db_unavailable(db, monkeypatch):
    def unavailable(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("could not connect to server"))

    monkeypatch.setattr("worker.receiver.event_writer.EventWriter._store", unavailable)
    client = make_client(db)
    body, headers = signed(event("charge.succeeded", charge()))
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 503
    assert scrape(client)[webhooks("stripe", "rejected", "db_unavailable")] == 1


def test_open_events_and_the_age_of_the_oldest_unprocessed_one_come_from_the_event_log(db):
    add_event(db, "evt_waiting", "received", age=600)
    add_event(db, "evt_retrying", "failed", age=120, event_type="charge.refunded")
    add_event(db, "evt_given_up", "dead", age=7200)  # waits for a person, not a worker: not in the age
    add_event(db, "evt_finished", "done", age=9000, took=1)
    samples = scrape(make_client(db))
    assert 600 <= samples["stripe_worker_oldest_unprocessed_event_age_seconds"] < 660
    assert samples['stripe_worker_events_open{status="received",type="charge.succeeded"}'] == 1
    assert samples['stripe_worker_events_open{status="failed",type="charge.refunded"}'] == 1
    assert samples['stripe_worker_events_open{status="dead",type="charge.succeeded"}'] == 1
    assert not any(name.startswith("stripe_worker_events_open") and "done" in name for name in samples)
    assert samples["stripe_worker_database_up"] == 1


def test_with_nothing_waiting_the_oldest_unprocessed_age_is_zero(db):
    add_event(db, "evt_finished", "done", age=30, took=1)
    assert scrape(make_client(db))["stripe_worker_oldest_unprocessed_event_age_seconds"] == 0


def test_the_last_hour_shows_events_by_status_and_type_with_their_received_to_done_delay(db):
    for number, took in enumerate([2, 4, 30]):
        add_event(db, f"evt_recent{number}", "done", age=1200, took=took)
    add_event(db, "evt_recent_failure", "dead", age=600, event_type="charge.refunded")
    add_event(db, "evt_no_handler", "ignored", age=60, event_type="customer.created")
    add_event(db, "evt_yesterday", "done", age=86_400, took=500)  # outside the hour: in no figure
    samples = scrape(make_client(db))
    recent = "stripe_worker_events_received_last_hour"
    assert samples[f'{recent}{{status="done",type="charge.succeeded"}}'] == 3
    assert samples[f'{recent}{{status="dead",type="charge.refunded"}}'] == 1
    assert samples[f'{recent}{{status="ignored",type="customer.created"}}'] == 1
    delay = "stripe_worker_processing_delay_seconds"
    assert samples[f'{delay}{{quantile="0.5"}}'] == 4
    assert samples[f'{delay}{{quantile="0.9"}}'] == 30
    assert samples[f'{delay}{{quantile="1"}}'] == 30


def test_an_event_processed_by_a_worker_shows_as_done_although_the_web_process_never_saw_it(
    db, stub_broker, stub_worker, worker_db
):
    from worker.jobs.actors import process_event

    client = make_client(db)
    body, headers = signed(event("charge.succeeded", charge("ch_metrics"), event_id="evt_worked"))
    client.post("/webhooks/stripe", content=body, headers=headers)
    assert scrape(client)['stripe_worker_events_open{status="received",type="charge.succeeded"}'] == 1

    process_event.send("evt_worked", "")
    stub_broker.join(process_event.queue_name, fail_fast=True)
    stub_worker.join()

    samples = scrape(client)
    assert samples['stripe_worker_events_received_last_hour{status="done",type="charge.succeeded"}'] == 1
    assert not any(name.startswith("stripe_worker_events_open") for name in samples)
    assert samples["stripe_worker_oldest_unprocessed_event_age_seconds"] == 0


def test_queue_depth_is_shown_per_queue_while_redis_answers(db):
    samples = scrape(make_client(db))
    assert samples["stripe_worker_redis_up"] == 1
    assert samples['stripe_worker_queue_depth{queue="events"}'] == 3
    assert samples['stripe_worker_queue_depth{queue="alerts"}'] == 0


def test_with_redis_down_metrics_still_answer_with_redis_up_0_and_no_queue_depth(db):
    def redis_down():
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    client = make_client(db, queue_depths=redis_down)
    body, headers = signed(event("charge.succeeded", charge()))
    client.post("/webhooks/stripe", content=body, headers=headers)
    samples = scrape(client)
    assert samples["stripe_worker_redis_up"] == 0
    assert not any(name.startswith("stripe_worker_queue_depth") for name in samples)
    assert samples[webhooks("stripe", "accepted")] == 1
    assert samples["stripe_worker_database_up"] == 1


def test_with_the_database_down_metrics_still_answer_with_the_webhook_counters_and_database_up_0(
    db, monkeypatch
):
    def unavailable(*_args, **_kwargs):
        raise OperationalError("SELECT", {}, Exception("could not connect to server"))

    client = make_client(db)
    client.post("/webhooks/funnel/wrong-token-0123456789", json=funnel_purchase())
    monkeypatch.setattr("worker.ops.event_stats.read_stats", unavailable)
    samples = scrape(client)
    assert samples["stripe_worker_database_up"] == 0
    assert samples[webhooks("funnel", "rejected", "bad_token")] == 1
    assert "stripe_worker_oldest_unprocessed_event_age_seconds" not in samples


def test_metrics_never_show_a_secret_even_one_that_arrived_as_an_event_type(db):
    add_event(db, "evt_odd", "received", age=5, event_type="sk_live_abcdef123456.leaked")
    client = make_client(db)
    body, headers = signed(event("charge.succeeded", charge()))
    client.post("/webhooks/stripe", content=body, headers=headers)
    client.post(f"/webhooks/funnel/{TOKEN}", json=funnel_purchase())
    text = client.get("/metrics").text
    for secret in (TEST_SECRET, TOKEN, "sk_live_abcdef123456", "whsec_"):
        assert secret not in text


# The contract: every name and label that dashboards and alerts use, with its Prometheus type.
CONTRACT = {
    "stripe_worker_webhooks_total": ("counter", {"endpoint", "outcome", "reason"}),
    "stripe_worker_database_up": ("gauge", set()),
    "stripe_worker_events_open": ("gauge", {"status", "type"}),
    "stripe_worker_events_received_last_hour": ("gauge", {"status", "type"}),
    "stripe_worker_oldest_unprocessed_event_age_seconds": ("gauge", set()),
    "stripe_worker_processing_delay_seconds": ("summary", {"quantile"}),
    "stripe_worker_redis_up": ("gauge", set()),
    "stripe_worker_queue_depth": ("gauge", {"queue"}),
}


def page_families(text: str) -> dict[str, tuple[str, str, set[str], list]]:
    """The page as Prometheus reads it: name (as exposed) -> (type, help, label names, samples)."""
    found = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels}
        found[name] = (family.type, family.documentation, labels, family.samples)
    return found


def test_every_metric_keeps_its_name_and_labels_and_has_help_and_its_prometheus_type(db):
    add_event(db, "evt_waiting", "received", age=60)
    add_event(db, "evt_finished", "done", age=60, took=2)
    text = make_client(db).get("/metrics").text
    found = page_families(text)
    assert {name: (kind, labels) for name, (kind, _, labels, _) in found.items()} == CONTRACT
    assert all(help_text for _, help_text, _, _ in found.values())
    # What Prometheus' parser sees is what the page says, line by line.
    assert "# TYPE stripe_worker_processing_delay_seconds summary" in text
    assert "# TYPE stripe_worker_webhooks_total counter" in text


def test_the_processing_delay_is_a_summary_of_quantiles_only_and_nan_when_nothing_finished(db):
    """No _sum or _count: in a summary those are counters since the start, and the event log is read for
    the last hour only. With nothing finished in the hour, each quantile is NaN (OpenMetrics' rule)."""
    text = make_client(db).get("/metrics").text
    assert "stripe_worker_processing_delay_seconds_sum" not in text
    assert "stripe_worker_processing_delay_seconds_count" not in text
    kind, _, _, samples = page_families(text)["stripe_worker_processing_delay_seconds"]
    assert kind == "summary"
    assert [sample.labels["quantile"] for sample in samples] == ["0.5", "0.9", "0.99", "1"]
    assert all(math.isnan(sample.value) for sample in samples)


def test_label_values_are_escaped_so_an_odd_event_type_cannot_break_the_page(db):
    odd = 'a"b\\c\nd'
    add_event(db, "evt_odd_type", "received", age=5, event_type=odd)
    text = make_client(db).get("/metrics").text
    assert 'type="a\\"b\\\\c\\nd"' in text
    _, _, _, samples = page_families(text)["stripe_worker_events_open"]
    assert [sample.labels["type"] for sample in samples] == [odd]


def test_two_apps_in_one_process_keep_their_counts_apart_and_off_the_global_registry(db):
    first, second = make_client(db), make_client(db)
    body, headers = signed(event("charge.succeeded", charge(), event_id="evt_app_one"))
    first.post("/webhooks/stripe", content=body, headers=headers)
    assert scrape(first)[webhooks("stripe", "accepted")] == 1
    assert scrape(second)[webhooks("stripe", "accepted")] == 0
    assert not any(m.name.startswith(metrics.PREFIX) for m in prometheus_client.REGISTRY.collect())


def test_the_receivers_write_health_hook_turns_database_up_to_0_while_the_log_is_still_read(db):
    add_event(db, "evt_waiting", "received", age=60)
    healthy = {"writes": True}
    registry = metrics.receiver_registry(metrics.WebhookCounter(), db, write_health=lambda: healthy["writes"])
    assert registry.get_sample_value("stripe_worker_database_up") == 1
    healthy["writes"] = False
    assert registry.get_sample_value("stripe_worker_database_up") == 0
    assert (
        registry.get_sample_value(
            "stripe_worker_events_open", {"status": "received", "type": "charge.succeeded"}
        )
        == 1
    )
    assert "stripe_worker_redis_up" not in metrics.render(registry)  # no queue_depths: no Redis figures


def test_with_a_metrics_token_the_page_needs_it_as_a_bearer_token(db):
    from starlette.testclient import TestClient

    from tests.stripe_fixtures import TEST_SECRET
    from worker.receiver.web import create_app

    app = create_app(db=db, enqueue=lambda *_: None, secrets=[TEST_SECRET], metrics_token="metrics-token-abc")
    client = TestClient(app)
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "metrics-token-abc" not in refused.text
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-abc"})
    assert allowed.status_code == 200 and "stripe_worker_webhooks_total" in allowed.text


def test_worker_metrics_are_on_redis_brokers_only_and_idle_outside_a_worker_process(monkeypatch):
    """Unit tests run on the StubBroker: no metrics middleware, no port. The receiver and the CLI enqueue
    through a Redis broker that carries it, but it only starts in a booted `dramatiq` worker process."""
    from dramatiq import Message

    from worker.jobs import broker as broker_module
    from worker.settings import Settings

    assert not any(isinstance(m, broker_module.WorkerMetrics) for m in broker_module.broker.middleware)
    assert isinstance(broker_module.broker.middleware[0], broker_module.EventLogContext)

    redis_broker = broker_module.build_broker(Settings(broker="redis", redis_url="redis://127.0.0.1:9/0"))
    [worker_metrics] = [m for m in redis_broker.middleware if isinstance(m, broker_module.WorkerMetrics)]
    assert isinstance(redis_broker.middleware[0], broker_module.EventLogContext)
    assert worker_metrics.forks == []  # served by a worker process, not by a forked one
    retried = Message(queue_name="events", actor_name="process_event", args=("evt_x", ""), kwargs={},
                      options={"retries": 1})  # fmt: skip
    worker_metrics.after_enqueue(redis_broker, retried, None)  # the receiver enqueueing: nothing happens
    assert (worker_metrics.ready, worker_metrics.server) == (False, None)
    for name in ("dramatiq_prom_host", "dramatiq_prom_port"):
        monkeypatch.delenv(name, raising=False)
    assert broker_module.metrics_address() == ("127.0.0.1", 9191)
