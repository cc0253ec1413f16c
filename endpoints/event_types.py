"""Event type names and the subscription patterns that select them.

An event type is dot-separated segments of letters, digits, `_` and `-` (`order.paid`,
`invoice.payment_failed`). A pattern is the same with `*` standing for any run of characters,
dots included: `order.*` matches `order.paid` and `order.refund.created`, `*` matches all
(`**` is the same as `*`). An endpoint with no patterns receives every event type.

Matching never backtracks: a pattern is split on `*` into literal pieces; the first must be a
prefix of the type, the last a suffix, and the pieces between are found left to right, each at
its leftmost place after the previous one (for `*`-only globs the leftmost place is always a
right choice: it leaves the most room for what follows). Each piece is searched once, so one
pattern costs at most len(type) x len(pattern) character comparisons, whatever the pattern.
The pattern `*a*a*a*a*a*a*a*a*a*a*b`, which took a regex 34 s on a type of 40 `a`, is now one
suffix test. `PatternSet` compiles an endpoint's patterns once for many types.
"""

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = [
    "MAX_EVENT_TYPE_LENGTH",
    "MAX_PATTERNS_PER_ENDPOINT",
    "Glob",
    "PatternSet",
    "compiled_patterns",
    "event_type_error",
    "matches",
    "pattern_error",
]

MAX_EVENT_TYPE_LENGTH = 100
MAX_PATTERNS_PER_ENDPOINT = 100
"""Patterns one endpoint may hold (checked when it is saved). Fan-out matches every event
against the patterns of every active endpoint of its tenant, so their number multiplies the
cost of each event; 100 is far more than a subscription needs once wildcards are used
(`order.*`), and keeps the worst case (100 general globs of 100 characters) to tens of
microseconds per endpoint and event."""
EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
PATTERN_RE = re.compile(r"[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*")


def event_type_error(event_type: object) -> str | None:
    """Why `event_type` is not a valid event type name, or None."""
    if not isinstance(event_type, str):
        return f"event type must be a string, not {type(event_type).__name__}"
    if not event_type or len(event_type) > MAX_EVENT_TYPE_LENGTH:
        return f"event type must be 1 to {MAX_EVENT_TYPE_LENGTH} characters long"
    if not EVENT_TYPE_RE.fullmatch(event_type):
        return (
            f"event type {event_type!r} must be dot-separated segments of letters, digits, "
            "'_' and '-', such as 'order.paid'"
        )
    return None


def pattern_error(pattern: object) -> str | None:
    """Why `pattern` is not a valid subscription pattern, or None."""
    if not isinstance(pattern, str):
        return f"pattern must be a string, not {type(pattern).__name__}"
    if not pattern or len(pattern) > MAX_EVENT_TYPE_LENGTH:
        return f"pattern must be 1 to {MAX_EVENT_TYPE_LENGTH} characters long"
    if not PATTERN_RE.fullmatch(pattern):
        return (
            f"pattern {pattern!r} must be dot-separated segments of letters, digits, '_', '-' "
            "and '*', such as 'order.*'"
        )
    return None


class Glob:
    """One pattern with a `*` between literal pieces, matched without backtracking (see the
    module doc)."""

    __slots__ = ("head", "middle", "min_length", "tail")

    def __init__(self, pattern: str) -> None:
        pieces = pattern.split("*")
        self.head, self.tail = pieces[0], pieces[-1]
        # Empty pieces come from `**`: they match anywhere.
        self.middle = [piece for piece in pieces[1:-1] if piece]
        self.min_length = len(pattern) - len(pieces) + 1

    def match(self, text: str) -> bool:
        """Whether the whole of `text` matches."""
        return self.trace(text, None)

    def trace(self, text: str, searches: list[tuple[str, int, int]] | None) -> bool:
        """`match`, appending each search it makes, `(piece, start, end)`, to `searches`.

        The searches bound the work: each middle piece is searched once, in text[start:end],
        with start never moving back; a search costs at most (end - start) x len(piece)
        comparisons, and the prefix and suffix tests len(head) + len(tail).
        """
        if len(text) < self.min_length or not text.startswith(self.head) or not text.endswith(self.tail):
            return False
        position, end = len(self.head), len(text) - len(self.tail)
        for piece in self.middle:
            if searches is not None:
                searches.append((piece, position, end))
            found = text.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True


class PatternSet:
    """An endpoint's subscription patterns compiled once, to match many event types.

    Exact names sit in a set, `prefix*` and `*suffix` patterns in tuples tested by one
    `startswith`/`endswith` call each, the rest are `Glob`s. An empty list matches every
    type. Non-string items (only possible in rows written around validation) match nothing.
    """

    __slots__ = ("everything", "exact", "globs", "prefixes", "suffixes")

    def __init__(self, patterns: Iterable[object]) -> None:
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.everything = not patterns
        exact, prefixes, suffixes, globs = set(), set(), set(), {}
        for pattern in patterns:
            if not isinstance(pattern, str):
                continue
            if "*" not in pattern:
                exact.add(pattern)
                continue
            while "**" in pattern:
                pattern = pattern.replace("**", "*")  # noqa: PLW2901  (the same pattern, tidied)
            head, _, rest = pattern.partition("*")
            if not rest:
                if head:
                    prefixes.add(head)
                else:
                    self.everything = True
            elif not head and "*" not in rest:
                suffixes.add(rest)
            elif pattern not in globs:
                globs[pattern] = Glob(pattern)
        self.exact = exact
        self.prefixes, self.suffixes = tuple(prefixes), tuple(suffixes)
        self.globs = list(globs.values())

    def match(self, event_type: str) -> bool:
        """Whether an endpoint subscribed to these patterns receives `event_type`."""
        return (
            self.everything
            or event_type in self.exact
            or event_type.startswith(self.prefixes)
            or event_type.endswith(self.suffixes)
            or any(glob.match(event_type) for glob in self.globs)
        )


def compiled_patterns(patterns: Iterable[object]) -> PatternSet:
    """The `PatternSet` of `patterns`, from a per-process cache: endpoints rarely change their
    patterns, and many share the same ones, so each fan-out finds them compiled (building them
    was 60-70 % of the CPU of a fan-out to 1,000 endpoints of 20 patterns each)."""
    key = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    try:
        return _compiled(key)
    except TypeError:  # an unhashable item, only possible in rows written around validation
        return PatternSet(key)


# 4,096 sets of at most 100 patterns: a few MB at most.
@lru_cache(maxsize=4096)
def _compiled(patterns: tuple[object, ...]) -> PatternSet:
    return PatternSet(patterns)


def matches(patterns: Iterable[object], event_type: str) -> bool:
    """Whether an endpoint subscribed to `patterns` receives `event_type`."""
    return compiled_patterns(patterns).match(event_type)
