"""The operator console: endpoints, events and deliveries in Django admin.

Modules: `endpoint_admin` (the Endpoint admin: it needs delivery figures, so it lives on this
side of the endpoints -> deliveries dependency) with its `endpoint_actions` and
`new_secrets` (shown once), `event_admin`, `delivery_admin` (with `waiting`: why a pending
delivery waits), `ordering_key_admin` (per-key chains and their heads), and `common`
(permission-checked actions, capped counts), `filters`, `forms`.
"""

from . import delivery_admin, endpoint_admin, event_admin, ordering_key_admin  # noqa: F401  (register the ModelAdmins)
