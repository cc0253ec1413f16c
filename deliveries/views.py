"""HTTP views of the deliveries app."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, generate_latest

from . import metrics  # noqa: F401  (registers the database gauges)

# What generate_latest() writes. Not prometheus_client.CONTENT_TYPE_LATEST: from 0.22 on that
# names text format 1.0.0, while generate_latest() still writes 0.0.4.
PROMETHEUS_TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of this web process, plus the backlog and endpoint gauges read from
    the database at each scrape.

    Unauthenticated, and it exposes no secrets, URLs or payloads: only counts, durations and
    ages. Still, let only the Prometheus scraper reach it (firewall or proxy rule), and list
    the host name Prometheus uses in DJANGO_ALLOWED_HOSTS.
    """
    return HttpResponse(generate_latest(REGISTRY), content_type=PROMETHEUS_TEXT_CONTENT_TYPE)
