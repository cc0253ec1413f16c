"""The customers' REST API: each tenant of the host manages its own endpoints and reads its own
events and deliveries (README "API for your customers").

Needs the `api` extra (Django REST framework and drf-spectacular); a host without it never
imports this package. Mount it with `path("api/webhooks/", include("deliveries.api.urls"))` and
name the function mapping a request to its tenant in `WEBHOOKS_API_TENANT`.
"""
