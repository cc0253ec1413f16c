"""The scenarios of issue 15: the burst again, with per-key ordering (`ordered`) and with a
per-endpoint rate limit (`limited`), so the report can put what each costs next to the plain
burst. Same harness and sizes as `burst`: one endpoint, `events` events published with
publish_many, `batch` per transaction, one fleet of workers started on empty tables."""

import itertools
import time
import uuid

from .run import Bench, Window, make_endpoints, measure, ordering_key, publish_burst

BINDING_PERIOD = 1  # seconds: the period of both limits, so the busiest window is one second


def ordered(bench: Bench, events: int, batch: int, keys: int) -> dict:
    """The burst to one endpoint, its events spread over `keys` ordering keys in turn; checks
    that for every key the receiver got the first receipt of each event in publish order."""
    fleet = bench.fleet("ordered")
    path = "/ok/ordered"
    try:
        endpoints = make_endpoints(bench, "ordered", [path])

        def run() -> Window:
            started = time.monotonic()
            published = publish_burst("ordered", events, batch, ordering_keys=keys)
            window = Window(bench, fleet, endpoints, "ordered", {path})
            window.extra["publish_seconds"] = round(time.monotonic() - started, 3)
            window.wait_received(bench.drain_timeout)
            window.wait_settled()
            window.poll()
            window.extra.update(
                ordering_keys=keys,
                events_per_key=round(events / keys, 1),
                order_violations=order_violations(
                    [webhook_id for webhook_id, _ in window.first_receipts], published, keys
                ),
            )
            return window

        result = measure(bench, fleet, run)
        result["workers"], result["concurrency"] = fleet.count, fleet.concurrency
        return result
    finally:
        fleet.stop()


def order_violations(first_receipts: list[str], published: list[str], keys: int) -> int:
    """How many events reached the receiver for the first time after a later-published event
    of their ordering key had (`first_receipts`: webhook ids in the receiver's order;
    `published`: event ids in publish order, keyed as publish_burst keys them)."""
    place = {f"evt_{uuid.UUID(pk).hex}": (ordering_key(n, keys), n) for n, pk in enumerate(published)}
    latest: dict[str, int] = {}
    violations = 0
    for webhook_id in first_receipts:
        if webhook_id not in place:
            continue
        key, number = place[webhook_id]
        if number < latest.get(key, -1):
            violations += 1
        else:
            latest[key] = number
    return violations


def limited(bench: Bench, events: int, batch: int, rate_limit: int, binding_events: int, binding_limit: int) -> dict:
    """The burst to one endpoint limited to `rate_limit` requests per second, a limit the burst
    does not reach: what the limiter costs (its SQL and CPU). Then, with `binding_events`,
    that many events to an endpoint limited to `binding_limit` per second, which binds: the
    rate reached against the limit, and the busiest second at the receiver (never above it)."""
    fleet = bench.fleet("limited")
    try:
        result = measure(bench, fleet, lambda: limited_window(bench, fleet, "limited", events, batch, rate_limit))
        result["workers"], result["concurrency"] = fleet.count, fleet.concurrency
        if binding_events:
            bench.say(f"  binding: {binding_events} events to an endpoint limited to {binding_limit} per second")
            # Deliveries over a limit that wait longer than WEBHOOKS_MAX_COUNTDOWN are sent by the
            # sweep: run beat, as a deployment does (the non-binding run never waits).
            fleet.start_beat()
            result["binding"] = measure(
                bench,
                fleet,
                lambda: limited_window(bench, fleet, "limited-binding", binding_events, batch, binding_limit),
            )
        return result
    finally:
        fleet.stop()


def limited_window(bench: Bench, fleet, tenant: str, events: int, batch: int, rate_limit: int) -> Window:
    path = f"/ok/{tenant}"
    endpoints = make_endpoints(bench, tenant, [path], rate_limit=rate_limit, rate_limit_period=BINDING_PERIOD)
    started = time.monotonic()
    publish_burst(tenant, events, batch)
    window = Window(bench, fleet, endpoints, tenant, {path})
    window.extra["publish_seconds"] = round(time.monotonic() - started, 3)
    window.wait_received(bench.drain_timeout)
    window.wait_settled()
    window.poll()
    # Every request counts against the limit, a repeated one too.
    requests = sorted(at for times in window.arrivals.values() for at in times)
    span = requests[-1] - requests[0] if requests else 0.0
    window.extra.update(
        rate_limit=rate_limit,
        rate_limit_period_s=BINDING_PERIOD,
        requests=len(requests),
        busiest_window=busiest_window(requests, BINDING_PERIOD),
        longest_pause_s=round(max((b - a for a, b in itertools.pairwise(requests)), default=0.0), 3),
        # Per second over the first to the last request plus one period: the limit itself when
        # every period is used in full (the first `limit` requests go out at once).
        achieved_rate_per_s=round(len(requests) / (span + BINDING_PERIOD), 1) if requests else None,
    )
    return window


def busiest_window(arrivals: list[float], seconds: float) -> int:
    """The most requests that arrived within any `seconds` (sorted arrival times)."""
    busiest = start = 0
    for end, at in enumerate(arrivals):
        while at - arrivals[start] >= seconds:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest
