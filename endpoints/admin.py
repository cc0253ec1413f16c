"""Where the operator console lives: every webhook screen is in the deliveries app's admin
package, `deliveries/admin/`, not here.

- Endpoints (list with delivery figures and state, change form, actions enable / disable /
  send a test event / rotate secret / replay failures): `deliveries/admin/endpoint_admin.py`,
  its actions in `endpoint_actions.py`, the new-secrets page shown once in `new_secrets.py`.
- Events (read-only, with the deliveries each one made): `deliveries/admin/event_admin.py`.
- Deliveries (every attempt, why one waits, Retry now, Cancel): `deliveries/admin/delivery_admin.py`
  with `waiting.py`; ordering keys and the delivery each one waits for: `ordering_key_admin.py`.
- Shared pieces: `common.py` (permission-checked actions, capped counts), `filters.py`,
  `forms.py`; templates in `deliveries/templates/deliveries/admin/`.

Why not here: the Endpoint screens show delivery figures and start sends, and this app never
imports deliveries (DESIGN.md). Signing secrets have no admin of their own: their values are
shown once, when created or rotated, and never again."""
