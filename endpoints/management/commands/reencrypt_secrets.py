"""`manage.py reencrypt_secrets`: re-encrypt every stored secret (signing secrets, client
certificate keys, sensitive custom header values) under the newest key.

Key rotation: put the new key first in WEBHOOKS_SECRET_KEYS (keep the old ones after it) and
restart every process, so all of them write under the new key and still read the old; then
run this; then remove the old keys. Rows are rewritten in batches, each its own short
transaction; a row that the newest key already opens is left alone, so the command can be
interrupted and run again.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from endpoints import secret_box
from endpoints.models import Endpoint, EndpointClientCertificate, EndpointSecret

# (model, encrypted field, what it is in messages)
ENCRYPTED = (
    (EndpointSecret, "encrypted_secret", "endpoint secrets"),
    (EndpointClientCertificate, "encrypted_private_key", "client certificate keys"),
    (Endpoint, "encrypted_headers", "sensitive header values"),
)


class Command(BaseCommand):
    help = (
        "Re-encrypt endpoint secrets, client certificate keys and sensitive header values under the first of "
        "WEBHOOKS_SECRET_KEYS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction (default 500).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the counts as JSON.")

    def handle(self, *args, batch_size, as_json, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            secret_box.encrypt("")  # fails at once, with the reason, when no key is usable
        except secret_box.SecretKeyError as exc:
            raise CommandError(str(exc)) from None
        report = {label: reencrypt_all(model, field, batch_size) for model, field, label in ENCRYPTED}
        if as_json:
            self.stdout.write(json.dumps(report, sort_keys=True))
        else:
            for label, counts in report.items():
                self.stdout.write(
                    f"{label}: {counts['reencrypted']} re-encrypted, {counts['current']} already under the "
                    f"newest key, {counts['unreadable']} unreadable"
                )
        unreadable = sum(counts["unreadable"] for counts in report.values())
        if unreadable:
            raise CommandError(
                f"{unreadable} values could not be decrypted with any of WEBHOOKS_SECRET_KEYS; they were left "
                "as they are. Add the key they were written under and run the command again."
            )


def reencrypt_all(model, field: str, batch_size: int) -> dict[str, int]:
    """Rewrite every `field` of `model` that the newest key does not open; count what was done."""
    counts = {"reencrypted": 0, "current": 0, "unreadable": 0}
    last_pk = 0
    while True:
        # An empty value encrypts nothing (an endpoint without sensitive headers).
        rows = list(
            model.objects.filter(pk__gt=last_pk).exclude(**{field: ""}).order_by("pk").only("pk", field)[:batch_size]
        )
        if not rows:
            return counts
        last_pk = rows[-1].pk
        changed = []
        for row in rows:
            token = getattr(row, field)
            if secret_box.is_current(token):
                counts["current"] += 1
                continue
            try:
                setattr(row, field, secret_box.reencrypt(token))
            except secret_box.SecretKeyError:
                counts["unreadable"] += 1
                continue
            changed.append(row)
        # One UPDATE per batch, its own transaction; only this column is written, so a
        # concurrent rotation (expires_at) is never overwritten.
        model.objects.bulk_update(changed, [field])
        counts["reencrypted"] += len(changed)
