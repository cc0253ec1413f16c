"""Why a request is rejected: every rejection is a `WebhookVerificationError` subclass."""

__all__ = [
    "InvalidPayloadError",
    "InvalidSignatureError",
    "MissingHeaderError",
    "TimestampOutsideToleranceError",
    "WebhookVerificationError",
]


class WebhookVerificationError(Exception):
    """The request is not an authentic, fresh webhook; the message says why."""


class MissingHeaderError(WebhookVerificationError):
    """A header the scheme needs is absent or empty."""


class InvalidSignatureError(WebhookVerificationError):
    """No signature entry matched, or the signature headers are malformed."""


class TimestampOutsideToleranceError(WebhookVerificationError):
    """The signed timestamp is too old or too far in the future."""


class InvalidPayloadError(WebhookVerificationError):
    """The body is authentic but is not a UTF-8 JSON object."""
