"""The Endpoint admin is registered by the deliveries app (deliveries/admin/endpoint_admin.py):
its list shows delivery figures and its actions send, retry and replay deliveries, and this
app never imports deliveries. Signing secrets have no admin of their own: their values are
shown once, when created or rotated, and never again."""
