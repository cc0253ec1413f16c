"""An endpoint's custom request headers, and the credentials among them.

A custom header is sensitive when its name is listed in the endpoint's `sensitive_headers` or
names a credential (it contains one of SENSITIVE_HEADER_WORDS: `Authorization`, `X-Api-Key`,
...). The value of a sensitive header is a credential the receiver gave us, so it is treated
like a signing secret:

- stored encrypted (`Endpoint.encrypted_headers`, a secret_box token of the sensitive values),
  while the `headers` column keeps the header's name with HIDDEN in place of its value;
- write-only: whoever edits `headers` sees HIDDEN, keeps the value by leaving HIDDEN, replaces
  it by writing a new value, drops it by removing the header; nothing reads the value back
  except the transport (`Endpoint.request_headers()`);
- redacted from every attempt record (deliveries/sending.py uses `is_sensitive_header`).
"""

from collections.abc import Iterable, Mapping

from django.core.exceptions import ValidationError

__all__ = ["HIDDEN", "SENSITIVE_HEADER_WORDS", "is_sensitive_header", "reveal", "seal"]

HIDDEN = "[hidden]"
# A header whose name contains one of these holds a credential or a signature, listed or not.
SENSITIVE_HEADER_WORDS = ("signature", "auth", "token", "secret", "key", "cookie", "password", "session")


def is_sensitive_header(name: str, sensitive: Iterable[str] = ()) -> bool:
    """Whether a header's value is a credential or signature: its name contains one of
    SENSITIVE_HEADER_WORDS, or is one of `sensitive` (an endpoint's sensitive_headers), in any case."""
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_HEADER_WORDS) or lowered in {s.lower() for s in sensitive}


def seal(
    headers: Mapping[str, str], sensitive: Iterable[str], stored: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Split custom headers as written by an operator or host code into what is shown (sensitive
    values replaced by HIDDEN) and the sensitive values to store encrypted.

    `stored` holds the sensitive values saved before; a header left at HIDDEN keeps its stored
    value. Raises ValidationError (never quoting a value) when HIDDEN stands for nothing stored,
    or for a header that is no longer sensitive: un-marking a header must not reveal its value.
    """
    sensitive = list(sensitive)
    stored_by_name = {name.lower(): value for name, value in stored.items()}
    shown: dict[str, str] = {}
    hidden: dict[str, str] = {}
    for name, value in headers.items():
        if value != HIDDEN:
            if is_sensitive_header(name, sensitive):
                shown[name], hidden[name] = HIDDEN, value
            else:
                shown[name] = value
            continue
        if name.lower() not in stored_by_name:
            raise ValidationError(
                f"Header {name!r} has no stored value for {HIDDEN} to keep; enter its value.", code="header_value"
            )
        if not is_sensitive_header(name, sensitive):
            raise ValidationError(
                f"Header {name!r} keeps its hidden value only while it is listed in sensitive headers; enter a "
                "new value to send it as a plain header.",
                code="header_value",
            )
        shown[name], hidden[name] = HIDDEN, stored_by_name[name.lower()]
    return shown, hidden


def reveal(shown: Mapping[str, str], hidden: Mapping[str, str]) -> dict[str, str]:
    """The headers as sent: each HIDDEN replaced by its stored value. A HIDDEN with no stored
    value (only possible by writing the columns behind the model's back) is left out rather
    than sent as the literal placeholder."""
    hidden_by_name = {name.lower(): value for name, value in hidden.items()}
    sent = {}
    for name, value in shown.items():
        if value != HIDDEN:
            sent[name] = value
        elif name.lower() in hidden_by_name:
            sent[name] = hidden_by_name[name.lower()]
    return sent
