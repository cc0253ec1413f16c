"""What the API changes is written where admin writes it: the object's admin History (LogEntry,
with the acting user and a sentence), and a log line with the tenant.

A host whose API users are not rows of its user table (a token mapped to no user) still gets the
log line; the History entry needs a user to name.
"""

import logging
from collections.abc import Iterable

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

__all__ = ["ADDITION", "CHANGE", "DELETION", "record_change"]

logger = logging.getLogger("deliveries.api")


def record_change(request, model, ids: Iterable[int], message: str, action_flag: int = CHANGE) -> None:
    """Record `message` for each object `ids` of `model` changed through the API by `request`'s user.

    Call it before a deletion (the rows must still exist to be named)."""
    ids = list(ids)
    user = getattr(request, "user", None)
    user_pk = getattr(user, "pk", None)
    if user_pk is not None and ids:
        objects = model._default_manager.filter(pk__in=ids)
        LogEntry.objects.log_actions(user_pk, objects, action_flag, change_message=f"API: {message}")
    logger.info(
        "webhooks api change: %s",
        message,
        extra={
            "model": model._meta.label,
            "object_ids": ids,
            "user": user.get_username() if user_pk is not None else None,
            "tenant": getattr(request, "webhooks_tenant", None),
        },
    )
