"""Per-endpoint rate limits on the real pipeline: two worker processes and beat on a private
Redis, PostgreSQL, a receiver on 127.0.0.1 that timestamps every request.

The limiter itself (slots, clocks, lowering and raising) is tests/test_rate_limits.py. Each test
prints what it measured (`-rP`).
"""

import json
import signal
import threading
import time
from collections import Counter, defaultdict

import pytest

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, ParkedReason
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.processes import SlowAnswers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(180)]


def busiest_window(times: list[float], period: float) -> int:
    """The most requests any window of `period` seconds holds."""
    times = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= period:
            start += 1
        most = max(most, end - start + 1)
    return most


def start_fleet(processes, workers: int = 2):
    broker = processes.redis()
    fleet = [processes.worker(broker, concurrency=8) for _ in range(workers)]
    processes.beat(broker)
    return broker, fleet


def test_a_burst_to_a_limited_endpoint_keeps_to_its_rate_while_another_goes_at_full_speed(processes, receiver):
    # Given an endpoint limited to 60 requests per 10 s, and one without a limit
    Endpoint.objects.create(url=receiver.url("/limited"), tenant="slow", rate_limit=60, rate_limit_period=10)
    Endpoint.objects.create(url=receiver.url("/free"), tenant="fast")
    broker, _ = start_fleet(processes)

    # When 300 events are published for each, in bursts
    events = [{"type": "order.paid", "data": {"n": n}, "tenant": "slow"} for n in range(300)]
    events += [{"type": "order.paid", "data": {"n": n}, "tenant": "fast"} for n in range(300)]
    processes.publish_events(broker, events, each=False)

    # Then the unlimited endpoint gets all 300 while the limited one is still far from done
    receiver.wait_for(300, "/free", timeout=60)
    limited_by_then = len(receiver.received("/limited"))
    assert limited_by_then <= 180, f"the limited endpoint got {limited_by_then} of 300 while the other got 300"

    # and the limited one gets all 300, with no window of 10 s holding more than 60
    receiver.wait_for(300, "/limited", timeout=150)
    wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 600, 30, "600 succeeded")
    times = [request.received_at for request in receiver.received("/limited")]
    most = busiest_window(times, 10.0)
    span = max(times) - min(times)
    print(
        f"MEASURED 300 at 60/10 s: busiest 10 s window {most}, first to last {span:.1f} s; "
        f"the limited endpoint had {limited_by_then} when the free one had 300"
    )
    assert most <= 60
    assert len(times) == 300 and len(set(r.headers["webhook-id"] for r in receiver.received("/limited"))) == 300
    # nothing failed, no attempt spent on waiting: one attempt per delivery
    assert not Delivery.objects.exclude(status=DeliveryStatus.SUCCEEDED).exists()
    assert DeliveryAttempt.objects.count() == 600
    assert not Delivery.objects.filter(parked_reason=ParkedReason.RATE_LIMIT).exists()


def test_worker_killed_mid_send_with_ordering_and_a_rate_limit_loses_nothing_and_keeps_order(processes, receiver):
    # Given an endpoint limited to 20 requests per 2 s whose receiver takes 0.4 s per request
    answers = SlowAnswers(0.4)
    receiver.script("/hook", [answers])
    Endpoint.objects.create(url=receiver.url("/hook"), rate_limit=20, rate_limit_period=2)
    broker, (first, _) = start_fleet(processes)

    # and 4 keys x 15 events published in order, the keys interleaved
    events = [
        {"type": "order.updated", "data": {"key": f"order-{k}", "n": n}, "ordering_key": f"order-{k}"}
        for n in range(15)
        for k in range(4)
    ]
    threading.Thread(target=processes.publish_events, args=(broker, events), daemon=True).start()

    # When one worker is killed (SIGKILL) with requests in flight
    wait_until(lambda: len(receiver.received("/hook")) >= 12, 60, "12 requests received")
    wait_until(lambda: answers.snapshot()[0], 30, "a request in flight")
    first.signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()

    # Then all 60 deliveries succeed
    wait_until(
        lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 60, 120, "60 deliveries succeeded"
    )
    recovery = time.monotonic() - killed_at
    requests = receiver.received("/hook")
    bodies = [json.loads(request.body) for request in requests]
    # each key's first receipts in publish order (a resent one repeats an earlier place only)
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen = set()
    for body in bodies:
        if body["id"] not in seen:
            seen.add(body["id"])
            first_seen[body["data"]["key"]].append(body["data"]["n"])
    assert {key: order for key, order in first_seen.items()} == {f"order-{k}": list(range(15)) for k in range(4)}
    # duplicates only for sends the killed worker had made, each at most twice
    repeats = Counter(body["id"] for body in bodies)
    assert set(repeats.values()) <= {1, 2}
    # the rate held throughout, resends included
    most = busiest_window([request.received_at for request in requests], 2.0)
    print(
        f"MEASURED kill -9 with ordering and 20/2 s: all 60 delivered {recovery:.1f} s after the kill, "
        f"{sum(n == 2 for n in repeats.values())} received twice, busiest 2 s window {most}"
    )
    assert most <= 20
