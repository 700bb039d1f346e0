"""The worker processes' own metrics: Dramatiq's figures for the whole worker group, on 127.0.0.1.

A real stack of its own (redis-server, the receiver, `python -m dramatiq worker.jobs.actors` with two
worker processes, as `python -m worker worker` runs it), scraped the way Prometheus would.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import stripe_fixtures as sf
from tests.integration.faults_helpers import children
from tests.integration.stack import (
    PYTHON,
    FakeStripe,
    ManagedProcess,
    Stack,
    free_port,
    needs_redis,
    wait_until,
)

pytestmark = [pytest.mark.integration, needs_redis]

PROCESSES = 2
PROCESS_EVENT = {"actor_name": "process_event", "queue_name": "events"}


def start_worker_group(stack: Stack) -> ManagedProcess:
    argv = [PYTHON, "-m", "dramatiq", "worker.jobs.actors", "--processes", str(PROCESSES), "--threads", "1"]
    stack.worker = stack._spawn("worker", argv)
    wait_until(
        lambda: stack.worker.stderr_path.read_text(errors="replace").count("ready for action") >= PROCESSES,
        f"{PROCESSES} dramatiq worker processes to be ready",
        watch=[stack.worker],
    )
    return stack.worker


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the worker group's page, by name and labels."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset({**PROCESS_EVENT, **labels}.items())), 0.0)


def listening_addresses(port: int) -> set[str]:
    """The local addresses a socket listens on `port` (IPv4 and IPv6), as /proc/net shows them."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


@pytest.fixture
def worker_stack(tmp_path, fake_stripe: FakeStripe, api_key: str):
    stack = Stack(tmp_path, api_key=api_key, stripe_api_base=fake_stripe.url)
    stack.metrics_port = free_port()
    stack.metrics_dir = tmp_path / "worker-metrics"
    stack.env.update(dramatiq_prom_port=str(stack.metrics_port), dramatiq_prom_db=str(stack.metrics_dir))
    try:
        stack.start_redis()
        migrated = stack.cli("migrate")
        assert migrated.returncode == 0, migrated
        stack.start_web()
        yield stack
    finally:
        stack.stop_all()
        stack.close_database()


def test_a_worker_group_serves_dramatiqs_metrics_for_all_its_processes_on_127_0_0_1(worker_stack, uid):
    stack, port = worker_stack, worker_stack.metrics_port
    group = start_worker_group(stack)

    # One page for the group, served by one of its worker processes: no extra process is forked.
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    assert len(children(group.pid)) == PROCESSES
    assert (
        group.stderr_path.read_text().count(
            f"worker metrics for this worker group on http://127.0.0.1:{port}"
        )
        == 1
    )

    events = [
        sf.event("charge.succeeded", sf.charge(f"ch_wm{n}_{uid}"), event_id=f"evt_wm{n}_{uid}")
        for n in range(6)
    ]
    for document in events:
        assert stack.post_event(document).status_code == 200
    stack.wait_for_events([e["id"] for e in events])

    # Counted in whichever process handled each message, summed on the page.
    samples = wait_until(
        lambda: (s := scrape(port)) and value(s, "dramatiq_messages_total") == len(events) and s,
        "the worker group's page to count the events",
        watch=[group],
    )
    assert value(samples, "dramatiq_message_errors_total") == 0
    assert value(samples, "dramatiq_message_duration_milliseconds_count") == len(events)
    assert value(samples, "dramatiq_messages_inprogress") == 0
    per_process = list(stack.metrics_dir.glob("*/counter_*.db"))
    assert len(per_process) >= 1  # prometheus_client's multiprocess files, one per process that counted


def test_a_restarted_worker_group_starts_from_zero_and_removes_the_old_groups_files(worker_stack, uid):
    stack, port = worker_stack, worker_stack.metrics_port
    first = start_worker_group(stack)
    event = sf.event("charge.succeeded", sf.charge(f"ch_wr_{uid}"), event_id=f"evt_wr_{uid}")
    assert stack.post_event(event).status_code == 200
    stack.wait_for_events([event["id"]])
    wait_until(
        lambda: value(scrape(port), "dramatiq_messages_total") == 1, "the event counted", watch=[first]
    )
    [old_directory] = stack.metrics_dir.iterdir()

    first.stop()
    second = start_worker_group(stack)

    samples = scrape(port)
    assert value(samples, "dramatiq_messages_total") == 0
    [directory] = stack.metrics_dir.iterdir()
    assert directory != old_directory and directory.name.startswith(f"{second.pid}-")


def test_a_taken_port_is_reported_and_the_workers_still_process_events(worker_stack, uid):
    stack = worker_stack
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", stack.metrics_port))
        taken.listen()
        group = start_worker_group(stack)
        event = sf.event("charge.succeeded", sf.charge(f"ch_wt_{uid}"), event_id=f"evt_wt_{uid}")
        assert stack.post_event(event).status_code == 200
        stack.wait_for_events([event["id"]])

    lines = [json.loads(line) for line in group.stderr_path.read_text().splitlines() if line.startswith("{")]
    [refused] = [line for line in lines if line["msg"].startswith("worker metrics not served")]
    assert refused["level"] == "error"
    assert f"127.0.0.1:{stack.metrics_port} (the port is in use); set dramatiq_prom_port" in refused["msg"]
