"""`Idempotency-Key` on the API's POSTs that create or do something: a repeat within 24 hours
(same tenant, same key) gets the first answer again, status and body, and nothing is done twice.

The key's row is inserted in the same transaction as the work. A second request with the same
key blocks on the unique index until the first commits, then reads its answer; if the first
failed, its row rolled back with its work and the second does the work. So two identical
requests at once never both act, and no request ever sees a half-done key.

Only successful (2xx) answers are kept: a refused request (400, 404, 409) did nothing, and may be
sent again with the same key once the client fixed it. The stored answer is encrypted
(endpoints.secret_box), because create and rotate-secret answers show a signing secret: a repeat
returns that same secret, which is the point (the client lost the first answer), and the
database holds it no more readably than the endpoint's own encrypted secrets. Rows go after
24 hours with the retention job.
"""

import hashlib
import json
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from endpoints import secret_box

from ..models import ApiIdempotencyKey
from .base import Conflict

HEADER = "Idempotency-Key"
KEPT_FOR = ApiIdempotencyKey.KEPT_FOR
MAX_LENGTH = 255

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description="A key of yours (at most 255 characters): a repeat with the same key within 24 h gets the "
    "first answer again and does nothing twice. The same key with another request body or route: 422.",
)


class KeyReused(APIException):
    """422: the key was used for another request."""

    status_code = 422
    default_code = "idempotency_key_reused"


def _fingerprint(route: str, data) -> str:
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{route}\n{body}".encode()).hexdigest()


def _replay(row: ApiIdempotencyKey, route: str, fingerprint: str) -> Response:
    if row.route != route or row.fingerprint != fingerprint:
        raise KeyReused(
            f"{HEADER} {row.key!r} was already used for another request ({row.route}, or another body) "
            "within the last 24 hours; send a new key for a new request."
        )
    try:
        body = json.loads(secret_box.decrypt(row.response_body, what="a stored API answer"))
    except secret_box.SecretKeyError:
        # WEBHOOKS_SECRET_KEYS lost the key it was stored under: done once, but not showable again.
        raise Conflict(
            f"The request with {HEADER} {row.key!r} was done, but its answer can no longer be read (the "
            "WEBHOOKS_SECRET_KEYS changed); read the object instead, or send a new key for a new request."
        ) from None
    response = Response(body, status=row.response_status)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(method):
    """Make a view's POST handler honour the Idempotency-Key header (absent: no change)."""

    @wraps(method)
    def handler(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return method(view, request, *args, **kwargs)
        if not key or len(key) > MAX_LENGTH:
            raise ValidationError({HEADER: [f"Use 1 to {MAX_LENGTH} characters."]})
        tenant = view.tenant
        route = f"{request.method} {request.path}"
        fingerprint = _fingerprint(route, request.data)
        now = timezone.now()
        with transaction.atomic():
            ApiIdempotencyKey.objects.filter(tenant=tenant, key=key, created_at__lt=now - KEPT_FOR).delete()
            try:
                with transaction.atomic():  # waits here for a concurrent first request to finish
                    row = ApiIdempotencyKey.objects.create(
                        tenant=tenant,
                        key=key,
                        route=route[:300],
                        fingerprint=fingerprint,
                        response_status=0,
                        response_body="",
                        created_at=now,
                    )
            except IntegrityError:
                return _replay(ApiIdempotencyKey.objects.get(tenant=tenant, key=key), route[:300], fingerprint)
            response = method(view, request, *args, **kwargs)  # a refusal raises: the row rolls back
            if not 200 <= response.status_code < 300:
                transaction.set_rollback(True)
                return response
            row.response_status = response.status_code
            row.response_body = secret_box.encrypt(json.dumps(response.data, default=str))
            row.save(update_fields=["response_status", "response_body"])
        return response

    return handler
