"""Requests through an endpoint's rate limit from several threads, as workers make them: reserve
a few slots, POST on some of them (header X-Slot: the slot's id, X-Sender: who sent it), finish,
and wait for the next free slot when none was granted. Used by tests/test_rate_limits.py in its
own process and, as a second process, with

    python -m tests.rate_limit_load <endpoint id> <url> <requests per thread> <threads> <sender> <go file>

which prints READY once Django is set up, and starts when the go file exists.
"""

import random
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import requests

HOLD = timedelta(seconds=10)
DEADLINE_SECONDS = 60.0


def send_through_the_limit(endpoint_id: int, url: str, count: int, sender: str) -> int:
    """POST `count` requests to `url` within the endpoint's rate limit; the number sent."""
    from django.db import connection
    from django.utils import timezone

    from endpoints import rate_limits
    from endpoints.models import Endpoint

    endpoint = Endpoint.objects.get(pk=endpoint_id)
    chance = random.Random()
    deadline = time.monotonic() + DEADLINE_SECONDS
    sent = 0
    with requests.Session() as session:
        try:
            while sent < count and time.monotonic() < deadline:
                wanted = chance.randint(1, 3)
                reservation = rate_limits.reserve(endpoint, wanted, HOLD)
                # Some slots go unused (a send stopped early): they must be free again at once.
                used = min(chance.randint(0, reservation.granted), count - sent)
                for slot_id in reservation.slot_ids[:used]:
                    session.post(url, data=b"{}", headers={"X-Slot": str(slot_id), "X-Sender": sender}, timeout=10)
                rate_limits.finish(reservation, used=used)
                sent += used
                if reservation.granted < wanted:
                    free_at = rate_limits.next_free_at(endpoint)
                    time.sleep(min(max((free_at - timezone.now()).total_seconds(), 0.005), 0.5))
        finally:
            connection.close()
    return sent


def send_from_threads(endpoint_id: int, url: str, count: int, threads: int, sender: str) -> list[int]:
    """send_through_the_limit() from `threads` threads at once; what each sent."""
    sent = [0] * threads

    def run(index: int) -> None:
        sent[index] = send_through_the_limit(endpoint_id, url, count, f"{sender}-{index}")

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sent


if __name__ == "__main__":
    import django

    django.setup()
    endpoint_id, url, count, threads, sender, go = sys.argv[1:7]
    print("READY", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    print("SENT", sum(send_from_threads(int(endpoint_id), url, int(count), int(threads), sender)), flush=True)
