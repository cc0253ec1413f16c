"""Who receives webhooks: endpoints, their secrets and subscriptions. `from endpoints.models import Endpoint`."""

# The version of the django-webhook-sender distribution (pyproject.toml reads it), written once
# here, in the app every other module may import, and sent in the default User-Agent.
__version__ = "0.2.0"
