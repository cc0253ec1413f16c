"""The receiver toolkit (webhook_receiver): what people receiving our webhooks verify them with.

`verify` against the shared reference vectors, against what other people's libraries sign, and
against malformed input; the Django decorator through Django's test client; and round trips
from our real sender (publish, real worker) over real HTTP to a verifying receiver.
"""

import base64
import hashlib
import hmac
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import standardwebhooks
import stripe
import svix.webhooks
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import Client

from deliveries import publish
from deliveries.models import DeliveryStatus, Event
from deliveries.signing import signature_headers
from endpoints.models import Endpoint, SignatureScheme, generate_secret
from tests import receiver_urls
from tests.conftest import wait_until
from tests.django_server import serving_django
from tests.receiver_urls import OLD_SECRET, SECRET
from webhook_receiver import (
    InvalidPayloadError,
    InvalidSignatureError,
    MissingHeaderError,
    TimestampOutsideToleranceError,
    VerifiedWebhook,
    WebhookVerificationError,
    verify,
    verify_webhook,
)
from webhook_receiver.django import CacheDedupeStore, webhook_view

VECTORS = json.loads((Path(__file__).parent / "data" / "signature-vectors.json").read_text())
STANDARD = VECTORS["standard_webhooks"]["valid"][0]
HEX = VECTORS["timestamped_hex"]["valid"][0]
TOLERANCE = VECTORS["standard_webhooks"]["tolerance_seconds"]


def standard_headers(signature: str = STANDARD["signature"], **overrides: str) -> dict[str, str]:
    headers = {"webhook-id": STANDARD["id"], "webhook-timestamp": str(STANDARD["timestamp"])}
    return {**headers, "webhook-signature": signature, **overrides}


def signed(scheme: str, secrets: list[str], body: bytes, msg_id: str = "evt_1", timestamp: int | None = None):
    """Headers exactly as our sender signs them."""
    return signature_headers(scheme, secrets, msg_id, int(time.time()) if timestamp is None else timestamp, body)


# The formats verify tells apart from the headers when given shared secrets; body_hmac is only
# accepted when asked for (tests/test_receiver_formats.py), and v1a (ed25519) is verified with
# public keys (tests/test_receiver_ed25519.py).
AUTO_DETECTED = [SignatureScheme.STANDARD, SignatureScheme.TIMESTAMPED_HEX]
BODY = json.dumps({"id": "evt_1", "type": "order.paid", "data": {"order": 1, "note": "café ☕"}}).encode()


# --- the shared reference vectors ---------------------------------------------------------------


def test_standard_vector_verifies_and_returns_the_parsed_body():
    payload = verify(STANDARD["secret"], standard_headers(), STANDARD["body"].encode(), now=STANDARD["timestamp"])
    assert payload == json.loads(STANDARD["body"])


def test_standard_vector_details():
    webhook = verify_webhook(STANDARD["secret"], standard_headers(), STANDARD["body"], now=STANDARD["timestamp"])
    assert webhook == VerifiedWebhook(
        id=STANDARD["id"],
        timestamp=STANDARD["timestamp"],
        payload={"test": 2432232314},
        scheme="standard",
        secret_index=0,
    )


@pytest.mark.parametrize("case", VECTORS["standard_webhooks"]["must_reject"], ids=lambda c: c["why"])
def test_standard_vector_must_reject(case):
    with pytest.raises(InvalidSignatureError):
        verify(STANDARD["secret"], standard_headers(case["signature"]), STANDARD["body"], now=STANDARD["timestamp"])


MULTI = re.search(r"'(.*)'", VECTORS["standard_webhooks"]["must_accept_multi"]).group(1)
MULTI_ENTRIES = MULTI.replace("<valid>", STANDARD["signature"]).split(" ")


@pytest.mark.parametrize("entries", list(itertools.permutations(MULTI_ENTRIES)), ids=lambda e: "|".join(e)[:40])
def test_standard_vector_must_accept_decoys_and_the_valid_one_in_any_order(entries):
    headers = standard_headers(" ".join(entries))
    assert verify(STANDARD["secret"], headers, STANDARD["body"], now=STANDARD["timestamp"]) == {"test": 2432232314}


def test_standard_vector_decoys_alone_are_rejected():
    decoys = " ".join(e for e in MULTI_ENTRIES if e != STANDARD["signature"])
    with pytest.raises(InvalidSignatureError, match="no v1 signature in webhook-signature matches"):
        verify(STANDARD["secret"], standard_headers(decoys), STANDARD["body"], now=STANDARD["timestamp"])


def test_timestamped_hex_vector_verifies():
    headers = {"X-Webhook-Signature": HEX["header"]}
    webhook = verify_webhook(HEX["secret"], headers, HEX["body"].encode(), now=HEX["timestamp"])
    assert webhook.payload == {"test": 2432232314}
    assert (webhook.scheme, webhook.timestamp, webhook.id) == ("timestamped_hex", HEX["timestamp"], None)


def test_timestamped_hex_vector_with_one_flipped_character_is_rejected():
    flipped = HEX["header"][:-1] + ("5" if HEX["header"][-1] != "5" else "6")
    with pytest.raises(InvalidSignatureError):
        verify(HEX["secret"], {"X-Webhook-Signature": flipped}, HEX["body"], now=HEX["timestamp"])


def test_the_two_schemes_are_not_interchangeable():
    # The hex form keyed like Standard Webhooks (or the other way round) does not verify.
    key = base64.b64decode(STANDARD["secret"].removeprefix("whsec_"))
    wrong = hmac.new(key, f"{HEX['timestamp']}.{HEX['body']}".encode(), hashlib.sha256).hexdigest()
    with pytest.raises(InvalidSignatureError):
        verify(
            HEX["secret"],
            {"X-Webhook-Signature": f"t={HEX['timestamp']},v1={wrong}"},
            HEX["body"],
            now=HEX["timestamp"],
        )


# --- what verify checks -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_fresh_requests_of_our_sender_verify_case_insensitively(scheme):
    headers = signed(scheme, [SECRET], BODY)
    for variant in (headers, {k.upper(): v for k, v in headers.items()}, {k.title(): v for k, v in headers.items()}):
        webhook = verify_webhook(SECRET, variant, BODY)
        assert webhook.payload["data"] == {"order": 1, "note": "café ☕"}
        assert webhook.id == "evt_1"
        assert webhook.scheme == scheme
    assert verify(SECRET, headers, BODY.decode()) == json.loads(BODY)  # a str body works too


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_a_tampered_body_is_rejected(scheme):
    headers = signed(scheme, [SECRET], BODY)
    with pytest.raises(InvalidSignatureError, match="a wrong secret, or a body changed after signing"):
        verify(SECRET, headers, BODY.replace(b'"order": 1', b'"order": 2'))


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_a_wrong_secret_is_rejected(scheme):
    with pytest.raises(InvalidSignatureError):
        verify(generate_secret(), signed(scheme, [SECRET], BODY), BODY)


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_tampered_id_or_timestamp_is_rejected(scheme):
    now = int(time.time())
    headers = signed(scheme, [SECRET], BODY, timestamp=now)
    if scheme == SignatureScheme.STANDARD:
        for changed in ({"webhook-id": "evt_2"}, {"webhook-timestamp": str(now - 1)}):
            with pytest.raises(InvalidSignatureError):
                verify(SECRET, {**headers, **changed}, BODY)
    else:
        moved = headers["X-Webhook-Signature"].replace(f"t={now}", f"t={now - 1}")
        with pytest.raises(InvalidSignatureError):
            verify(SECRET, {**headers, "X-Webhook-Signature": moved}, BODY)
        # X-Webhook-Id is not signed in this form: it must agree with the signed body's id.
        with pytest.raises(InvalidSignatureError, match="X-Webhook-Id does not match"):
            verify(SECRET, {**headers, "X-Webhook-Id": "evt_2"}, BODY)


def test_timestamped_hex_takes_the_id_from_the_signed_body_when_the_header_is_absent():
    headers = signed(SignatureScheme.TIMESTAMPED_HEX, [SECRET], BODY)
    del headers["X-Webhook-Id"]
    assert verify_webhook(SECRET, headers, BODY).id == "evt_1"


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (TOLERANCE, True), (TOLERANCE + 1, False), (-TOLERANCE, True), (-TOLERANCE - 1, False)],
)
def test_timestamp_tolerance_both_ways(scheme, offset, accepted):
    # offset > 0: the request is old; offset < 0: it claims to come from the future
    signed_at = 1_800_000_000
    headers = signed(scheme, [SECRET], BODY, timestamp=signed_at)
    if accepted:
        verify(SECRET, headers, BODY, now=signed_at + offset)
    else:
        word = "past" if offset > 0 else "future"
        with pytest.raises(TimestampOutsideToleranceError, match=f"s in the {word}, beyond the tolerance of 300 s"):
            verify(SECRET, headers, BODY, now=signed_at + offset)


def test_tolerance_is_configurable():
    headers = signed(SignatureScheme.STANDARD, [SECRET], BODY, timestamp=1_800_000_000)
    verify(SECRET, headers, BODY, tolerance=3600, now=1_800_003_000)
    with pytest.raises(TimestampOutsideToleranceError):
        verify(SECRET, headers, BODY, 10, now=1_800_000_011)


def test_an_old_request_of_our_sender_is_rejected_as_a_replay():
    headers = signed(SignatureScheme.STANDARD, [SECRET], BODY, timestamp=int(time.time()) - 301)
    with pytest.raises(TimestampOutsideToleranceError):
        verify(SECRET, headers, BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_standard_header_is_named(missing):
    headers = signed(SignatureScheme.STANDARD, [SECRET], BODY)
    with pytest.raises(MissingHeaderError, match=f"missing {missing} header"):
        verify(SECRET, {k: v for k, v in headers.items() if k != missing}, BODY)
    with pytest.raises(MissingHeaderError, match=f"missing {missing} header"):
        verify(SECRET, {**headers, missing: ""}, BODY)  # empty counts as missing


def test_missing_timestamped_hex_signature_and_no_headers_at_all():
    with pytest.raises(MissingHeaderError, match="missing X-Webhook-Signature header"):
        verify(SECRET, {"X-Webhook-Id": "evt_1"}, BODY)
    with pytest.raises(MissingHeaderError, match="expected webhook-id, webhook-timestamp and webhook-signature"):
        verify(SECRET, {"Content-Type": "application/json"}, BODY)


def test_missing_timestamp_in_the_timestamped_hex_header():
    headers = signed(SignatureScheme.TIMESTAMPED_HEX, [SECRET], BODY)
    without_t = ",".join(p for p in headers["X-Webhook-Signature"].split(",") if not p.startswith("t="))
    with pytest.raises(InvalidSignatureError, match="has no t= timestamp"):
        verify(SECRET, {**headers, "X-Webhook-Signature": without_t}, BODY)


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_rotation_signatures_from_the_old_and_the_new_secret(scheme):
    # The sender signs with both live secrets; a receiver knowing either one, or both, accepts.
    new = generate_secret()
    headers = signed(scheme, [new, OLD_SECRET], BODY)
    assert verify_webhook(OLD_SECRET, headers, BODY).secret_index == 0
    assert verify_webhook(new, headers, BODY).secret_index == 0
    # A receiver rotating on its side passes both secrets: the first that matches wins.
    assert verify_webhook([new, OLD_SECRET], headers, BODY).secret_index == 0
    assert verify_webhook((generate_secret(), OLD_SECRET), headers, BODY).secret_index == 1
    only_old = signed(scheme, [OLD_SECRET], BODY)
    assert verify_webhook([new, OLD_SECRET], only_old, BODY).secret_index == 1
    with pytest.raises(InvalidSignatureError, match="matches any of the 2 secrets"):
        verify([generate_secret(), generate_secret()], headers, BODY)


def test_non_base64_entries_are_skipped_but_never_enough():
    headers = signed(SignatureScheme.STANDARD, [SECRET], BODY)
    valid = headers["webhook-signature"]
    for junk in ("v1,dawfeoifkpqwoekfpqoekf", "v1,!!!!", "v1,YWJj", "v1", "garbage"):
        assert verify(SECRET, {**headers, "webhook-signature": f"{junk} {valid}"}, BODY)["id"] == "evt_1"
        with pytest.raises(InvalidSignatureError, match="no well-formed v1 signature"):
            verify(SECRET, {**headers, "webhook-signature": junk}, BODY)


def test_v1a_and_other_versions_are_ignored():
    headers = signed(SignatureScheme.STANDARD, [SECRET], BODY)
    valid_base64 = headers["webhook-signature"].removeprefix("v1,")
    ed25519_like = base64.b64encode(b"\x01" * 64).decode()
    # Alone, a v1a (or v2) entry is never checked, even when it carries the right HMAC.
    for entry in (f"v1a,{valid_base64}", f"v2,{valid_base64}", f"v1a,{ed25519_like}"):
        with pytest.raises(InvalidSignatureError, match="no v1 signature"):
            verify(SECRET, {**headers, "webhook-signature": entry}, BODY)
    mixed = f"v1a,{ed25519_like} v1,{valid_base64} v2,{valid_base64}"
    assert verify(SECRET, {**headers, "webhook-signature": mixed}, BODY)["id"] == "evt_1"
    hex_headers = signed(SignatureScheme.TIMESTAMPED_HEX, [SECRET], BODY)
    t, v1 = hex_headers["X-Webhook-Signature"].split(",")
    with pytest.raises(InvalidSignatureError, match="no v1 signature"):
        verify(SECRET, {**hex_headers, "X-Webhook-Signature": f"{t},v0={v1[3:]}"}, BODY)
    assert verify(SECRET, {**hex_headers, "X-Webhook-Signature": f"{t},v0=abc,{v1}"}, BODY)["id"] == "evt_1"


# --- malformed input never raises anything but WebhookVerificationError ------------------------


NOW = 1_800_000_000
VALID_STANDARD = signed(SignatureScheme.STANDARD, [SECRET], BODY, timestamp=NOW)
VALID_HEX = signed(SignatureScheme.TIMESTAMPED_HEX, [SECRET], BODY, timestamp=NOW)


@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [
        ({**VALID_STANDARD, "webhook-timestamp": "1800000000.5"}, InvalidSignatureError, "not an integer"),
        ({**VALID_STANDARD, "webhook-timestamp": "-1800000000"}, InvalidSignatureError, "not an integer"),
        ({**VALID_STANDARD, "webhook-timestamp": "soon"}, InvalidSignatureError, "not an integer"),
        ({**VALID_STANDARD, "webhook-timestamp": "1e9"}, InvalidSignatureError, "not an integer"),
        ({**VALID_STANDARD, "webhook-timestamp": "9" * 5000}, InvalidSignatureError, "not an integer"),
        ({**VALID_STANDARD, "webhook-timestamp": "١٨٠٠٠٠٠٠٠٠"}, InvalidSignatureError, "not an integer"),
        ({**VALID_STANDARD, "webhook-signature": "v1," + "A" * 100_000}, InvalidSignatureError, "longer than 8192"),
        ({**VALID_STANDARD, "webhook-signature": "v1,abc\x00def"}, InvalidSignatureError, "control or non-ASCII"),
        ({**VALID_STANDARD, "webhook-signature": "v1,é"}, InvalidSignatureError, "control or non-ASCII"),
        ({**VALID_STANDARD, "webhook-id": "evt_1\r\nX-Evil: 1"}, InvalidSignatureError, "control or non-ASCII"),
        ({**VALID_STANDARD, "webhook-id": "evt 1"}, InvalidSignatureError, "spaces"),
        ({**VALID_STANDARD, "webhook-id": "e" * 10_000}, InvalidSignatureError, "longer than 256"),
        ({**VALID_STANDARD, "webhook-signature": " ".join(["v1,"] * 3)}, InvalidSignatureError, "malformed"),
        (
            {**VALID_HEX, "X-Webhook-Signature": "t=1800000000,t=1800000000,v1=00"},
            InvalidSignatureError,
            "more than one",
        ),
        ({**VALID_HEX, "X-Webhook-Signature": "t=now,v1=" + "0" * 64}, InvalidSignatureError, "not an integer"),
        ({**VALID_HEX, "X-Webhook-Signature": "v1=" + "0" * 64 + ",t=" + "1" * 20}, InvalidSignatureError, "integer"),
        ({**VALID_HEX, "X-Webhook-Signature": "t=1800000000,v1=zz"}, InvalidSignatureError, "no well-formed v1"),
        ({**VALID_HEX, "X-Webhook-Signature": "t=1800000000," + "x" * 9000}, InvalidSignatureError, "longer than"),
        ({**VALID_HEX, "X-Webhook-Id": "evt\x001"}, InvalidSignatureError, "control or non-ASCII"),
        ({**VALID_HEX, "X-Webhook-Signature": b"t=1800000000,v1=\xff"}, InvalidSignatureError, "non-ASCII"),
        ({**VALID_STANDARD, "webhook-signature": 12}, InvalidSignatureError, "not text"),
    ],
    ids=itertools.count(),
)
def test_malformed_headers_raise_clear_verification_errors(headers, error, message):
    with pytest.raises(error, match=message) as raised:
        verify(SECRET, headers, BODY, now=NOW)
    assert len(str(raised.value)) < 300  # never echoes an enormous value


def test_a_header_given_twice_is_rejected():
    # http.server (and email.message) keep repeated headers: which one would count is ambiguous.
    message = Message()
    for name, value in VALID_STANDARD.items():
        message[name] = value
    assert verify(SECRET, message, BODY, now=NOW)["id"] == "evt_1"
    message["Webhook-Signature"] = VALID_STANDARD["webhook-signature"]
    with pytest.raises(InvalidSignatureError, match="webhook-signature header given more than once"):
        verify(SECRET, message, BODY, now=NOW)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'"evt"', "not an object"),
        (b'{"amount": NaN}', "not valid JSON"),
        (b'{"amount": Infinity}', "not valid JSON"),
        (b'{"a": "\xff\xfe"}', "not UTF-8"),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a byte-order mark
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # nesting deeper than the recursion limit
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),  # beyond int max str digits
    ],
    ids=itertools.count(),
)
@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_an_authentic_body_that_is_not_a_json_object_raises_invalid_payload(scheme, body, message):
    headers = signed(scheme, [SECRET], body)
    with pytest.raises(InvalidPayloadError, match=message):
        verify(SECRET, headers, body)


def test_an_unsigned_non_utf8_body_is_a_signature_error():
    with pytest.raises(InvalidSignatureError):
        verify(SECRET, VALID_STANDARD, b"\xff\xfe\x00", now=NOW)
    with pytest.raises(InvalidPayloadError, match="not valid UTF-8"):
        verify(SECRET, VALID_STANDARD, "\ud800", now=NOW)  # a lone surrogate cannot be what was sent


def test_fuzzed_headers_raise_only_verification_errors():
    rng = random.Random(20261123)
    pieces = ["v1,", "v1a,", "v2,", "t=", "v1=", ",", " ", "=", "\t", "\x00", "\r\n", "é", "☕", "\udcff", "-", "."]
    pieces += [VALID_STANDARD["webhook-signature"], VALID_HEX["X-Webhook-Signature"], "A" * 9000, "9" * 20, "0" * 64]

    def junk() -> str:
        if rng.random() < 0.2:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(40))).decode("latin-1")
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(6)))

    outcomes = set()
    for _ in range(2000):
        headers = dict(rng.choice([VALID_STANDARD, VALID_HEX]))
        for name in rng.sample(sorted(headers), rng.randrange(1, len(headers) + 1)):
            headers[name] = junk()
        try:
            verify(SECRET, headers, BODY, now=NOW)
            outcomes.add("accepted")
        except WebhookVerificationError as error:
            outcomes.add(type(error).__name__)
    assert {"InvalidSignatureError", "MissingHeaderError"} <= outcomes


def test_exception_hierarchy():
    for error in (MissingHeaderError, InvalidSignatureError, TimestampOutsideToleranceError, InvalidPayloadError):
        assert issubclass(error, WebhookVerificationError)
    assert issubclass(WebhookVerificationError, Exception)


@pytest.mark.parametrize("secret", ["", [], [""], ["whsec_abc", 3], b"whsec_abc", " whsec_abc", None])
def test_a_misconfigured_secret_is_a_programming_error_not_a_rejection(secret):
    with pytest.raises(ValueError):
        verify(secret, VALID_STANDARD, BODY, now=NOW)


def test_verify_depends_on_the_standard_library_only():
    package = Path(__file__).parent.parent / "webhook_receiver"
    # django.py needs Django; ed25519.py needs `cryptography`, imported only for `whpk_` public keys
    # (tests/test_receiver_ed25519.py checks that secrets verify without it).
    core = sorted(path for path in package.glob("*.py") if path.name not in {"django.py", "ed25519.py"})
    assert {path.name for path in core} >= {"__init__.py", "formats.py"}
    # Relative imports (`from .formats import ...`) stay inside the package and are not matched.
    source = "\n".join(path.read_text() for path in core)
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, re.MULTILINE))
    assert imported <= {
        "base64",
        "binascii",
        "hashlib",
        "hmac",
        "json",
        "re",
        "time",
        "collections",
        "dataclasses",
        "typing",
    }


# --- what other people's libraries sign, we accept ----------------------------------------------


@pytest.mark.parametrize("library", [standardwebhooks.Webhook, svix.webhooks.Webhook], ids=["standardwebhooks", "svix"])
def test_accepts_what_standardwebhooks_and_svix_sign(library):
    secret = generate_secret()
    sent_at = datetime.now(tz=UTC)
    signature = library(secret).sign("msg_2Lh9KRb0pzN4LePd3XiA4v4BkSR", sent_at, BODY.decode())
    headers = {
        "webhook-id": "msg_2Lh9KRb0pzN4LePd3XiA4v4BkSR",
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }
    webhook = verify_webhook(secret, headers, BODY)
    assert webhook.id == "msg_2Lh9KRb0pzN4LePd3XiA4v4BkSR"
    assert webhook.payload == json.loads(BODY)
    # and they agree with us on what is valid
    library(secret).verify(BODY, headers)
    with pytest.raises(InvalidSignatureError):
        verify(secret, headers, BODY + b" ")


def test_accepts_what_stripe_signs_and_stripe_accepts_what_we_accept():
    secret = generate_secret()
    timestamp = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), secret, timestamp=timestamp)
    # the same, computed by hand with the standard library
    by_hand = hmac.new(secret.encode(), f"{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={timestamp},v1={by_hand}"
    assert stripe.WebhookSignature._compute_signature(f"{timestamp}.{BODY.decode()}", secret) == by_hand

    assert verify(secret, {"X-Webhook-Signature": header, "X-Webhook-Id": "evt_1"}, BODY)["id"] == "evt_1"
    event = stripe.Webhook.construct_event(BODY.decode(), header, secret)
    assert event["id"] == "evt_1"
    # and both refuse a changed body
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(BODY.decode() + " ", header, secret)
    with pytest.raises(InvalidSignatureError):
        verify(secret, {"X-Webhook-Signature": header}, BODY + b" ")


# --- the Django decorator, through Django's test client ------------------------------------------


@pytest.fixture
def receiving_project(settings) -> Iterator[None]:
    """This process as a receiving Django project: its URLs, a fresh local-memory cache."""
    settings.ROOT_URLCONF = "tests.receiver_urls"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": f"rtk-{time.time_ns()}"}
    }
    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
    settings.TEST_WEBHOOK_SECRET = SECRET
    receiver_urls.reset()
    yield
    receiver_urls.reset()


@pytest.fixture
def receiver_client(receiving_project) -> Client:
    # CSRF enforced, as in production: the decorator must exempt the view itself.
    return Client(enforce_csrf_checks=True, raise_request_exception=False)


def post(client: Client, path: str, body: bytes, headers: dict[str, str]):
    return client.post(path, data=body, content_type="application/json", headers=headers)


def body_for(webhook_id: str, **data) -> bytes:
    return json.dumps({"id": webhook_id, "type": "order.paid", "data": data}).encode()


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_decorated_view_gets_the_verified_payload(receiver_client, scheme):
    body = body_for("evt_a", order=1)
    response = post(receiver_client, "/hook/", body, signed(scheme, [SECRET], body, "evt_a"))
    assert (response.status_code, response.content) == (200, b"ok")
    assert receiver_urls.CALLS == [("hook", "evt_a", json.loads(body))]


def test_bad_signature_is_401_with_a_short_reason(receiver_client):
    body = body_for("evt_b", order=1)
    headers = signed(SignatureScheme.STANDARD, [SECRET], body, "evt_b")
    response = post(receiver_client, "/hook/", body_for("evt_b", order=2), headers)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("text/plain")
    assert b"no v1 signature in webhook-signature matches the secret" in response.content
    response = post(
        receiver_client, "/hook/", body, signed(SignatureScheme.STANDARD, [generate_secret()], body, "evt_b")
    )
    assert response.status_code == 401
    assert receiver_urls.CALLS == []


def test_stale_timestamp_is_401(receiver_client):
    body = body_for("evt_c")
    headers = signed(SignatureScheme.STANDARD, [SECRET], body, "evt_c", timestamp=int(time.time()) - 3600)
    response = post(receiver_client, "/hook/", body, headers)
    assert response.status_code == 401
    assert b"in the past, beyond the tolerance of 300 s" in response.content
    assert receiver_urls.CALLS == []


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_400(receiver_client, missing):
    body = body_for("evt_d")
    headers = signed(SignatureScheme.STANDARD, [SECRET], body, "evt_d")
    response = post(receiver_client, "/hook/", body, {k: v for k, v in headers.items() if k != missing})
    assert (response.status_code, response.content.decode()) == (400, f"missing {missing} header")
    assert receiver_urls.CALLS == []


def test_authentic_body_that_is_not_json_is_400_and_hex_without_an_id_is_400(receiver_client):
    headers = signed(SignatureScheme.STANDARD, [SECRET], b"[1]", "evt_e")
    response = post(receiver_client, "/hook/", b"[1]", headers)
    assert response.status_code == 400
    assert b"not an object" in response.content
    body = b'{"type": "order.paid"}'
    headers = signed(SignatureScheme.TIMESTAMPED_HEX, [SECRET], body)
    del headers["X-Webhook-Id"]
    response = post(receiver_client, "/hook/", body, headers)
    assert (response.status_code, response.content) == (400, b"missing X-Webhook-Id header")
    assert receiver_urls.CALLS == []


def test_a_body_over_djangos_upload_limit_is_413(receiver_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = body_for("evt_big", note="x" * 200)
    response = post(receiver_client, "/hook/", body, signed(SignatureScheme.STANDARD, [SECRET], body, "evt_big"))
    assert (response.status_code, response.content) == (413, b"request body too large")
    assert receiver_urls.CALLS == []


def test_only_post_is_allowed(receiver_client):
    response = receiver_client.get("/hook/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


@pytest.mark.parametrize("scheme", AUTO_DETECTED)
def test_a_duplicate_webhook_id_is_acknowledged_without_running_the_view(receiver_client, scheme):
    body = body_for("evt_f", order=1)
    first = post(receiver_client, "/hook/", body, signed(scheme, [SECRET], body, "evt_f"))
    # the sender's retry: same id, fresh timestamp and signature
    second = post(
        receiver_client, "/hook/", body, signed(scheme, [SECRET], body, "evt_f", timestamp=int(time.time()) + 1)
    )
    assert (first.status_code, first.content) == (200, b"ok")
    assert (second.status_code, second.content) == (200, b"duplicate")
    assert [call[1] for call in receiver_urls.CALLS] == ["evt_f"]
    # another id is processed; the default store keys the default cache per view and id
    other = body_for("evt_g")
    assert post(receiver_client, "/hook/", other, signed(scheme, [SECRET], other, "evt_g")).content == b"ok"
    key = CacheDedupeStore(prefix="webhook-receiver:tests.receiver_urls.hook:").key("evt_f")
    assert cache.get(key) == 1


def test_each_view_deduplicates_on_its_own(receiver_client):
    # Two endpoints of one receiver get the same event (same webhook id): both process it.
    body = body_for("evt_h")
    for path in ("/hook/", "/hook/setting/", "/hook/setting/"):
        post(receiver_client, path, body, signed(SignatureScheme.STANDARD, [SECRET], body, "evt_h"))
    assert [name for name, _, _ in receiver_urls.CALLS] == ["hook", "setting"]


def test_a_view_that_raises_releases_the_id_so_the_retry_is_processed(receiver_client):
    body = body_for("evt_i", order=9)
    first = post(receiver_client, "/hook/flaky/", body, signed(SignatureScheme.STANDARD, [SECRET], body, "evt_i"))
    assert first.status_code == 500  # the sender retries a 5xx
    assert receiver_urls.CALLS == []
    retry = post(receiver_client, "/hook/flaky/", body, signed(SignatureScheme.STANDARD, [SECRET], body, "evt_i"))
    assert (retry.status_code, retry.content) == (200, b"ok")
    assert receiver_urls.CALLS == [("flaky", "evt_i", json.loads(body))]
    again = post(receiver_client, "/hook/flaky/", body, signed(SignatureScheme.STANDARD, [SECRET], body, "evt_i"))
    assert again.content == b"duplicate"
    assert receiver_urls.ATTEMPTS == {"evt_i": 2}


def test_a_view_answering_non_2xx_releases_the_id_too(receiver_client):
    body = body_for("evt_j")
    assert post(receiver_client, "/hook/busy/", body, signed("standard", [SECRET], body, "evt_j")).status_code == 503
    assert post(receiver_client, "/hook/busy/", body, signed("standard", [SECRET], body, "evt_j")).content == b"ok"
    assert (
        post(receiver_client, "/hook/busy/", body, signed("standard", [SECRET], body, "evt_j")).content == b"duplicate"
    )
    assert [call[0] for call in receiver_urls.CALLS] == ["busy"]


def test_secret_from_a_setting_read_at_request_time(receiver_client, settings):
    body = body_for("evt_k")
    settings.TEST_WEBHOOK_SECRET = other = generate_secret()
    assert post(receiver_client, "/hook/setting/", body, signed("standard", [SECRET], body, "evt_k")).status_code == 401
    assert post(receiver_client, "/hook/setting/", body, signed("standard", [other], body, "evt_k")).status_code == 200


def test_secret_from_a_callable_with_rotation(receiver_client):
    for n, secret in enumerate((SECRET, OLD_SECRET)):
        body = body_for(f"evt_l{n}")
        response = post(
            receiver_client, "/hook/rotating/", body, signed("timestamped_hex", [secret], body, f"evt_l{n}")
        )
        assert response.status_code == 200
    assert [call[1] for call in receiver_urls.CALLS] == ["evt_l0", "evt_l1"]


def test_a_pluggable_store_is_claimed_and_released(receiver_client):
    store = receiver_urls.MEMORY_STORE
    body = body_for("evt_m")
    for _ in range(2):
        assert (
            post(receiver_client, "/hook/memory/", body, signed("standard", [SECRET], body, "evt_m")).status_code == 200
        )
    assert store.log == [("claim", "evt_m"), ("claim", "evt_m")]
    assert [call[0] for call in receiver_urls.CALLS] == ["memory"]


def test_deduplication_can_be_turned_off(receiver_client):
    body = body_for("evt_n")
    for _ in range(2):
        assert (
            post(receiver_client, "/hook/no-dedupe/", body, signed("standard", [SECRET], body, "evt_n")).content
            == b"ok"
        )
    assert [call[0] for call in receiver_urls.CALLS] == ["no-dedupe", "no-dedupe"]


def test_decorator_configuration_errors():
    with pytest.raises(ImproperlyConfigured):
        webhook_view()
    with pytest.raises(ImproperlyConfigured):
        webhook_view(secret=SECRET, secret_setting="X")

    async def async_view(request):
        return HttpResponse()

    with pytest.raises(TypeError, match="synchronous views only"):
        webhook_view(secret=SECRET)(async_view)


# --- round trips: our sender, a real worker, real HTTP -------------------------------------------


class VerifyingReceiver:
    """A threaded http.server on 127.0.0.1 that verifies every request with webhook_receiver.

    `secrets[path]` is what the receiver at `path` knows; it answers 200 when `verify` accepts
    and 401/400 with the reason otherwise, and records the outcome.
    """

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    # self.headers is http.client's HTTPMessage, as received
                    outcome = verify_webhook(owner.secrets[self.path], self.headers, body)
                    status, text = 200, b"verified"
                except WebhookVerificationError as error:
                    outcome = error
                    status = 400 if isinstance(error, MissingHeaderError | InvalidPayloadError) else 401
                    text = str(error).encode()
                with owner.lock:
                    owner.outcomes.append((self.path, outcome))
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format, *args) -> None:
                pass

        self.secrets: dict[str, str | list[str]] = {}
        self.outcomes: list[tuple[str, VerifiedWebhook | WebhookVerificationError]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def verifying_receiver() -> Iterator[VerifyingReceiver]:
    receiver = VerifyingReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def finished(event: Event, count: int):
    def check():
        deliveries = list(event.deliveries.select_related("endpoint"))
        if len(deliveries) == count and all(d.status != DeliveryStatus.PENDING for d in deliveries):
            return {d.endpoint.url: d for d in deliveries}
        return None

    return check


@pytest.mark.django_db(transaction=True)
def test_round_trip_our_sender_to_a_verifying_http_receiver(celery_worker, verifying_receiver):
    receiver = verifying_receiver
    standard = Endpoint.objects.create(url=receiver.url("/standard"))
    hexed = Endpoint.objects.create(url=receiver.url("/hex"), signature_scheme=SignatureScheme.TIMESTAMPED_HEX)
    # mid-rotation: the receivers know only the old secret, or only the new one
    rotating = Endpoint.objects.create(url=receiver.url("/rotating-old"))
    rotating_old, rotating_new = rotating.secret, rotating.rotate_secret()
    rotating_hex = Endpoint.objects.create(
        url=receiver.url("/rotating-hex-new"), signature_scheme=SignatureScheme.TIMESTAMPED_HEX
    )
    rotating_hex_new = rotating_hex.rotate_secret()
    Endpoint.objects.create(url=receiver.url("/wrong-secret"))
    receiver.secrets = {
        "/standard": standard.secret,
        "/hex": hexed.secret,
        "/rotating-old": rotating_old,
        "/rotating-hex-new": rotating_hex_new,
        "/wrong-secret": generate_secret(),
    }
    assert rotating_new != rotating_old

    event = publish("order.paid", {"order": 7, "note": "café ☕"})

    deliveries = wait_until(finished(event, 5), timeout=20)
    outcomes = dict(receiver.outcomes)
    assert len(receiver.outcomes) == 5  # one request each: four verified, one refused for good
    for path, scheme in [
        ("/standard", "standard"),
        ("/hex", "timestamped_hex"),
        ("/rotating-old", "standard"),
        ("/rotating-hex-new", "timestamped_hex"),
    ]:
        webhook = outcomes[path]
        assert isinstance(webhook, VerifiedWebhook), (path, webhook)
        assert webhook.scheme == scheme
        assert webhook.id == event.webhook_id
        assert webhook.payload["type"] == "order.paid"
        assert webhook.payload["data"] == {"order": 7, "note": "café ☕"}
        assert abs(webhook.timestamp - time.time()) < 60
        assert deliveries[receiver.url(path)].status == DeliveryStatus.SUCCEEDED
    assert isinstance(outcomes["/wrong-secret"], InvalidSignatureError)
    refused = deliveries[receiver.url("/wrong-secret")]
    assert (refused.status, refused.last_status_code) == (DeliveryStatus.FAILED, 401)


@pytest.fixture
def django_receiver(receiving_project) -> Iterator[str]:
    """This Django project serving tests/receiver_urls.py over real HTTP on 127.0.0.1."""
    with serving_django() as url:
        yield url


@pytest.mark.django_db(transaction=True)
def test_round_trip_our_sender_to_a_decorated_django_view(celery_worker, django_receiver, settings):
    # Given a receiving Django view that fails the first time (500), and quick retries
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5"
    Endpoint.objects.create(url=f"{django_receiver}/hook/flaky/", secret=SECRET)
    Endpoint.objects.create(
        url=f"{django_receiver}/hook/rotating/", secret=OLD_SECRET, signature_scheme=SignatureScheme.TIMESTAMPED_HEX
    )

    # When an event is published
    event = publish("order.paid", {"order": 8})

    # Then the failed attempt released the id, the retry was processed, each view saw it once
    deliveries = wait_until(finished(event, 2), timeout=20)
    flaky = deliveries[f"{django_receiver}/hook/flaky/"]
    assert flaky.status == DeliveryStatus.SUCCEEDED
    assert [a.response_status for a in flaky.attempts.order_by("number")] == [500, 200]
    rotating = deliveries[f"{django_receiver}/hook/rotating/"]
    assert rotating.status == DeliveryStatus.SUCCEEDED
    assert rotating.attempt_count == 1
    calls = sorted(receiver_urls.CALLS)
    assert [(name, webhook_id) for name, webhook_id, _ in calls] == [
        ("flaky", event.webhook_id),
        ("rotating", event.webhook_id),
    ]
    assert calls[0][2]["data"] == {"order": 8}

    # And a later delivery of the same webhook (re-signed, as the sender's retries are) is
    # acknowledged as a duplicate without running the view again
    body = json.dumps(calls[0][2]).encode()
    headers = signed(SignatureScheme.STANDARD, [SECRET], body, event.webhook_id)
    response = requests.post(f"{django_receiver}/hook/flaky/", data=body, headers=headers, timeout=10)
    assert (response.status_code, response.text) == (200, "duplicate")
    assert len(receiver_urls.CALLS) == 2
