"""Signal receivers connecting the endpoints app to deliveries."""

from django.dispatch import receiver
from django.utils import timezone

from endpoints.models import Endpoint
from endpoints.signals import endpoint_enabled, verification_requested

from .models import Delivery
from .scheduling import unpark


@receiver(endpoint_enabled, sender=Endpoint, dispatch_uid="deliveries.resume_parked")
def resume_parked_deliveries(sender, endpoint: Endpoint, **kwargs) -> None:
    """Deliveries kept while the endpoint was disabled become due now; the sweep sends them.
    An endpoint still awaiting verification keeps them parked for its handshake."""
    if endpoint.awaits_verification:
        return
    unpark(Delivery.objects.filter(endpoint=endpoint), timezone.now())


@receiver(verification_requested, sender=Endpoint, dispatch_uid="deliveries.start_verification")
def start_verification(sender, endpoint: Endpoint, **kwargs) -> None:
    """Run the handshake of an endpoint that just became unverified (deliveries/verification.py).
    A failed publish is logged: the endpoint is due, so the sweep enqueues its handshake."""
    from .tasks import enqueue_handshakes

    enqueue_handshakes([endpoint.pk])
