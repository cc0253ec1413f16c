"""endpoints/, endpoints/{id}/, endpoints/{id}/rotate-secret/: a tenant's endpoints.

The tenant of an endpoint is the request's, never the input's. A secret is shown when it is
made (create, rotate, a change of scheme that switched the key kind) and never read back.
"""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response

from endpoints.models import Endpoint, SignatureScheme

from .audit import ADDITION, DELETION, record_change
from .base import Conflict, TenantView, document
from .idempotency import IDEMPOTENCY_PARAMETER, idempotent
from .permissions import require_endpoint_change
from .serializers import (
    EndpointDetailSerializer,
    EndpointSecretSerializer,
    EndpointSerializer,
    RotatedSecretSerializer,
    RotateSecretSerializer,
)

# Writable fields set on the model as given; is_active goes through disable()/enable().
MODEL_FIELDS = (
    "url",
    "description",
    "event_types",
    "headers",
    "sensitive_headers",
    "signature_scheme",
    "signature_header",
    "signature_encoding",
    "signature_prefix",
    "rate_limit",
    "rate_limit_period",
)
DISABLED_REASON = "disabled through the API"


def shown_secret(endpoint: Endpoint, secret: str) -> str | None:
    """The secret to show once: a shared secret; None for an ed25519 private key, which stays
    with the sender (the receiver verifies with the public key)."""
    return None if endpoint.signature_scheme == SignatureScheme.STANDARD_ED25519 else secret


def set_active(endpoint: Endpoint, active: bool | None) -> None:
    """Apply `is_active` as an operator would: disable (deliveries kept) or enable (they resume)."""
    if active is None or active == endpoint.is_active:
        return
    if active:
        endpoint.enable()
    else:
        endpoint.disable(DISABLED_REASON)


class EndpointList(TenantView):
    """The tenant's endpoints, oldest first; create one (its secret is in this answer only)."""

    serializer_class = EndpointSerializer

    def tenant_queryset(self):
        return Endpoint.objects.filter(tenant=self.tenant)

    def get_queryset(self):
        return self.tenant_queryset()

    @document(summary="List endpoints", responses=EndpointSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(EndpointSerializer(page, many=True).data)

    @document(
        summary="Create an endpoint",
        request=EndpointSerializer,
        responses={201: EndpointSecretSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def post(self, request):
        serializer = EndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        active = values.pop("is_active", True)
        with transaction.atomic():
            endpoint = Endpoint(tenant=self.tenant, **values)
            endpoint.save()
            set_active(endpoint, active)
            # Deliveries wait until the URL answers the handshake (WEBHOOKS_VERIFY_API_ENDPOINTS).
            endpoint.require_verification()
            secret = endpoint.secret
            record_change(request, Endpoint, [endpoint.pk], "Created.", ADDITION)
        data = EndpointSecretSerializer(
            {**_fields(endpoint), "secret": shown_secret(endpoint, secret), "key_switched_until": None}
        ).data
        return Response(data, status=status.HTTP_201_CREATED)


def _fields(endpoint: Endpoint) -> dict:
    """The endpoint's readable fields, with its current public key."""
    data = {name: getattr(endpoint, name) for name in EndpointDetailSerializer().fields if name != "public_key"}
    data["public_key"] = endpoint.public_key
    return data


class EndpointDetail(TenantView):
    """One endpoint: read, change (is_active false disables it, true enables it), delete."""

    serializer_class = EndpointDetailSerializer

    def tenant_queryset(self):
        return Endpoint.objects.filter(tenant=self.tenant)

    def get_queryset(self):
        return self.tenant_queryset()

    @document(summary="Read an endpoint")
    def get(self, request, pk):
        return Response(EndpointDetailSerializer(_fields(self.get_object())).data)

    @document(summary="Replace an endpoint", request=EndpointSerializer, responses=EndpointSecretSerializer)
    def put(self, request, pk):
        return self._update(request, partial=False)

    @document(summary="Change an endpoint", request=EndpointSerializer, responses=EndpointSecretSerializer)
    def patch(self, request, pk):
        return self._update(request, partial=True)

    def _update(self, request, partial: bool) -> Response:
        serializer = EndpointSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        active = values.pop("is_active", None)
        with transaction.atomic():
            endpoint = self.get_queryset().select_for_update().get(pk=self.get_object().pk)
            require_endpoint_change(request, endpoint, values, active)  # what admin would require
            old_url = endpoint.url
            for name in MODEL_FIELDS:
                if name in values:
                    setattr(endpoint, name, values[name])
            endpoint.save()
            if endpoint.url != old_url:
                endpoint.require_verification()  # re-pointed through the API: the new URL must answer
            set_active(endpoint, active)
            switched = endpoint.key_switched_until
            # A change of scheme between shared secrets and ed25519 made a new key: show it now.
            secret = shown_secret(endpoint, endpoint.secret) if switched else None
            changed = ", ".join(sorted(values)) + (", is_active" if active is not None else "")
            record_change(request, Endpoint, [endpoint.pk], f"Changed {changed or 'nothing'}.")
        return Response(
            EndpointSecretSerializer({**_fields(endpoint), "secret": secret, "key_switched_until": switched}).data
        )

    @document(summary="Delete an endpoint (refused, 409, while it has deliveries: disable it instead)")
    def delete(self, request, pk):
        endpoint = self.get_object()
        # As in admin: an endpoint with deliveries is disabled, not deleted; history stays until retention.
        if endpoint.deliveries.exists():
            raise Conflict(
                f"Endpoint {endpoint.pk} has deliveries and cannot be deleted; disable it instead "
                '(PATCH {"is_active": false}). Its deliveries are removed by retention.'
            )
        with transaction.atomic():
            record_change(request, Endpoint, [endpoint.pk], "Deleted.", DELETION)
            endpoint.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecret(TenantView):
    """A new signing secret, shown once; the older ones keep signing for grace_seconds."""

    serializer_class = RotateSecretSerializer

    def tenant_queryset(self):
        return Endpoint.objects.filter(tenant=self.tenant)

    def get_queryset(self):
        return self.tenant_queryset()

    @document(
        summary="Rotate the signing secret",
        request=RotateSecretSerializer,
        responses=RotatedSecretSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def post(self, request, pk):
        serializer = RotateSecretSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        grace = timedelta(seconds=serializer.validated_data["grace_seconds"])
        endpoint = self.get_object()
        secret = endpoint.rotate_secret(grace=grace)
        seconds = serializer.validated_data["grace_seconds"]
        record_change(
            request, Endpoint, [endpoint.pk], f"Rotated the signing secret; the old one signs {seconds} s more."
        )
        data = {
            "secret": shown_secret(endpoint, secret),
            "public_key": endpoint.public_key,
            "previous_expire_at": timezone.now() + grace,
        }
        return Response(RotatedSecretSerializer(data).data)
