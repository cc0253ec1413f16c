"""What the operator commands share: --json, --as-user, --progress, and reading times.

Commands run on the server, as whoever can run manage.py there, so by default they check no
Django permission. `--as-user USERNAME` makes a command act for that user: it refuses unless
the user exists, is active and holds the permission the matching admin action needs (so a
runbook or a wrapper script can hold operators to their admin rights).
"""

import argparse
import re
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_common_arguments(parser: argparse.ArgumentParser, progress: bool = False) -> None:
    parser.add_argument("--json", action="store_true", help="Print one JSON document on stdout instead of text.")
    parser.add_argument(
        "--as-user",
        metavar="USERNAME",
        help="Act for this Django user: refuse unless they hold the permission the admin would require.",
    )
    if progress:
        parser.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Draw a progress bar on stderr (default: only when stderr is a terminal).",
        )


def check_permissions(username: str | None, *permissions: str) -> None:
    """Refuse (CommandError) unless `username` is None or an active user with every permission."""
    if username is None:
        return
    user = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise CommandError(f"no active user {username!r}")
    missing = [p for p in permissions if not user.has_perm(p)]
    if missing:
        raise CommandError(f"user {username!r} lacks the permission {', '.join(missing)}; nothing was done")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A point in time, as an operator types it: `90m`, `6h`, `2d` ago, an ISO date or
    datetime (`2026-11-23`, `2026-11-23T09:30`, with or without offset; no offset means the
    server's TIME_ZONE)."""
    text = text.strip()
    now = now or timezone.now()
    relative = RELATIVE.match(text)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * UNIT_SECONDS[relative.group(2)])
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"cannot read the time {text!r}: use e.g. 6h, 2d, 2026-11-23 or 2026-11-23T09:30")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    if moment > now:
        raise CommandError(f"{text!r} is in the future")
    return moment
