"""The receiver's fast paths stay equivalent to the slow ones they replace.

- `parse_event` reads a body with orjson first: for every body, accepted or refused, the outcome (the
  event, or the exception and its message) is the one the strict decoder alone gives.
- `worker.jobs.broker.enqueue_many` writes Dramatiq's Redis layout itself, in one MULTI/EXEC: it relies
  on Dramatiq 2.2.1's `dispatch` script and message fields, checked here so that an upgrade that changes
  them fails these tests rather than the workers.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
from importlib import resources

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from tests.stripe_fixtures import charge, event
from worker.jobs import broker as broker_module
from worker.receiver import stripe_events
from worker.receiver.stripe_events import NotAStripeEvent, parse_event


def strict_outcome(body: bytes):
    """What the strict decoder alone makes of `body` (the receiver before orjson)."""
    try:
        text = stripe_events.decode_body(body)
        document = stripe_events.parse_json(text)
        stripe_events.check_storable(text, document)
        return stripe_events.event_from_dict(document)
    except NotAStripeEvent as exc:
        return type(exc), str(exc)


def outcome(body: bytes):
    try:
        return parse_event(body)
    except NotAStripeEvent as exc:
        return type(exc), str(exc)


def _event_body(**overrides) -> bytes:
    document = event("charge.succeeded", charge(), event_id="evt_fast")
    document.update(overrides)
    return json.dumps(document).encode()


GOOD = _event_body()
BODIES = [
    GOOD,
    GOOD + b"\n",
    b"  " + GOOD,
    b"\xef\xbb\xbf" + GOOD,  # byte-order mark
    GOOD[:-1],  # truncated
    GOOD.replace(b'"evt_fast"', b'"evt_\xff"'),  # not UTF-8
    GOOD.replace(b'"evt_fast"', b'"evt_\xed\xa0\x80"'),  # an encoded surrogate
    _event_body(extra="\ud800".encode("utf-8", "surrogatepass").decode("latin-1")),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": "\\ud800"'),  # lone surrogate escape
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": "\\udc00\\ud800"'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": "\\ud83d\\ude00"'),  # a valid pair
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": "\\u0000"'),  # NUL
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": NaN'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": -Infinity'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 1e400'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 1e-400'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 1.5E3'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": -0'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 01'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 9223372036854775807'),  # int64 max
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 9223372036854775808'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 18446744073709551616'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": -9223372036854775809'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": 999999999999999999'),  # 18 digits
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": "1234567890123456789012"'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": "tab\tin a string"'),
    GOOD.replace(b'"object": "event"', b'"object": "event", "object": "charge"'),  # duplicate key
    b"[" * 2000 + b"]" * 2000,  # deeper than orjson reads
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": ' + b"[" * 499 + b"]" * 499),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": ' + b"[" * 980 + b"]" * 980),
    GOOD.replace(b'"object": "event"', b'"object": "event", "x": ' + b"[[]]," * 300 + b"0"),
    b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
    b'{"object": "event"} {}',  # trailing data
    b"",
    b"null",
    b"[]",
    b'"event"',
    _event_body(id="evt_bad id"),
    _event_body(created=True),
    _event_body(created=10**12),
    _event_body(livemode="yes"),
    _event_body(account="acct_1Ab"),
    _event_body(account="acct_bad!"),
    _event_body(api_version="2024-06-20.acacia"),
    _event_body(api_version="v2"),
    _event_body(type="charge.succeeded\n"),
    _event_body(data={"object": []}),
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_parse_event_gives_what_the_strict_decoder_gives(body):
    assert outcome(body) == strict_outcome(body)


def test_the_fast_path_is_taken_for_an_ordinary_event(monkeypatch):
    def refuse(_text):
        raise AssertionError("the strict decoder was used")

    monkeypatch.setattr(stripe_events, "parse_json", refuse)
    assert parse_event(GOOD).id == "evt_fast"


# --- enqueue_many and Dramatiq's Redis layout ------------------------------------------------------


def _dispatch_lua() -> str:
    return resources.files("dramatiq.brokers").joinpath("redis", "dispatch.lua").read_text()


def test_dramatiq_is_the_version_enqueue_many_was_written_for():
    assert dramatiq.__version__ == "2.2.1"


def test_the_dispatch_scripts_enqueue_is_what_enqueue_many_does():
    lua = _dispatch_lua()
    branch = re.search(r'if command == "enqueue" then\n(.*?)\n(?:else)?if ', lua, re.S)
    assert branch, "dispatch.lua has no enqueue command any more"
    lines = [line.strip() for line in branch.group(1).splitlines()]
    lines = [line for line in lines if line and not line.startswith("--")]
    assert lines == [
        "local message_id = ARGS[1]",
        "local message_data = ARGS[2]",
        *broker_module.DISPATCH_ENQUEUE_LUA,
    ]
    # The keys it writes, and the heartbeat every command records.
    assert 'local queue_full_name = namespace .. ":" .. queue_name' in lua
    assert 'local queue_messages = queue_full_name .. ".msgs"' in lua
    assert 'local heartbeats = namespace .. ":__heartbeats__"' in lua
    assert 'redis.call("zadd", heartbeats, timestamp, worker_id)' in lua


def test_message_fields_are_dramatiqs():
    assert tuple(f.name for f in dataclasses.fields(Message)) == broker_module.MESSAGE_FIELDS


class _RecordingPipeline:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def zadd(self, *args, **kwargs):
        self.calls.append(("zadd", args, kwargs))

    def hset(self, *args, **kwargs):
        self.calls.append(("hset", args, kwargs))

    def rpush(self, *args, **kwargs):
        self.calls.append(("rpush", args, kwargs))

    def execute(self):
        self.calls.append(("execute", (), {}))


def _recording_broker(calls: list) -> RedisBroker:
    broker = RedisBroker(client=redis.Redis(host="127.0.0.1", port=9))  # never connected

    def pipeline(transaction):
        calls.append(("pipeline", transaction))
        return _RecordingPipeline(calls)

    broker.client.pipeline = pipeline
    return broker


def test_enqueue_many_writes_decodable_messages_in_one_transaction():
    calls: list = []
    broker = _recording_broker(calls)
    actor = dramatiq.actor(lambda event_id, account: None, actor_name="fast_path_probe", broker=broker)
    before = time.time() * 1000
    broker_module.enqueue_many(broker, actor, [("evt_1", ""), ("evt_2", "acct_9")])

    assert [c[0] for c in calls] == ["pipeline", "zadd", "hset", "rpush", "execute"]
    assert calls[0][1] is True  # MULTI/EXEC
    assert calls[1][1][0] == "dramatiq:__heartbeats__"
    assert list(calls[1][1][1]) == [broker.broker_id]
    mapping = calls[2][2]["mapping"]
    assert calls[2][1] == ("dramatiq:default.msgs",)
    assert calls[3][1] == ("dramatiq:default", *mapping)  # ids pushed in order
    messages = [Message.decode(data) for data in mapping.values()]
    assert [m.args for m in messages] == [("evt_1", ""), ("evt_2", "acct_9")]
    for redis_id, message in zip(mapping, messages, strict=True):
        reference = actor.message(*message.args)
        assert (message.queue_name, message.actor_name, message.kwargs) == (
            reference.queue_name,
            reference.actor_name,
            reference.kwargs,
        )
        assert message.options == {"redis_message_id": redis_id}
        assert message.message_timestamp >= before - 1
        assert len({message.message_id, redis_id}) == 2


def test_enqueue_many_calls_the_middleware_that_hooks_enqueue():
    calls: list = []
    broker = _recording_broker(calls)
    seen = []

    class Hooked(dramatiq.Middleware):
        def before_enqueue(self, broker, message, delay):
            seen.append(("before", message.args, delay))

        def after_enqueue(self, broker, message, delay):
            seen.append(("after", message.args, delay))

    broker.add_middleware(Hooked())
    actor = dramatiq.actor(lambda event_id, account: None, actor_name="fast_path_hooked", broker=broker)
    broker_module.enqueue_many(broker, actor, [("evt_1", "")])
    assert seen == [("before", ("evt_1", ""), None), ("after", ("evt_1", ""), None)]


@pytest.fixture
def redis_server(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def _layout(client: redis.Redis) -> dict:
    """Every key with its type and shape, ids and timestamps left out."""
    out = {}
    for key in client.keys("*"):
        kind = client.type(key).decode()
        if kind == "hash":
            values = [Message.decode(v) for v in client.hgetall(key).values()]
            shape = sorted((m.queue_name, m.actor_name, m.args, tuple(m.options)) for m in values)
        elif kind == "list":
            shape = client.llen(key)
        else:
            shape = client.zcard(key)
        out[key.decode()] = (kind, shape)
    return out


def test_enqueue_many_leaves_redis_as_dramatiqs_own_enqueue_does(redis_server):
    def stored_by(send) -> dict:
        redis_server.flushall()
        broker = RedisBroker(client=redis_server)
        actor = dramatiq.actor(lambda event_id, account: None, actor_name="process_event", broker=broker,
                               queue_name="events")  # fmt: skip
        send(broker, actor)
        layout = _layout(redis_server)
        # What a worker does: Dramatiq's own consumer fetches, decodes and acknowledges them.
        consumer = broker.consume("events", prefetch=10, timeout=100)
        fetched = [next(consumer) for _ in range(2)]
        assert sorted(m.args for m in fetched) == [("evt_1", ""), ("evt_2", "acct_9")]
        for message in fetched:
            consumer.ack(message)
        consumer.close()
        assert redis_server.llen("dramatiq:events") == redis_server.hlen("dramatiq:events.msgs") == 0
        return layout

    def ours(broker, actor):
        broker_module.enqueue_many(broker, actor, [("evt_1", ""), ("evt_2", "acct_9")])

    def dramatiqs(broker, actor):
        actor.send("evt_1", "")
        actor.send("evt_2", "acct_9")

    layout = stored_by(ours)
    assert layout == stored_by(dramatiqs)
    assert set(layout) == {"dramatiq:__heartbeats__", "dramatiq:events", "dramatiq:events.msgs"}
