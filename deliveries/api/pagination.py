"""Cursor pagination for every list: `?after=<id>&limit=<n>`, oldest first.

The cursor is the id of the last object the client has (an event's `evt_...` id, an endpoint's
or delivery's number), so a receiver that stored the last event it processed asks
`events/?after=evt_...` and gets exactly what came later. Rows are ordered by
(created_at, pk): created_at alone has ties (bulk writes share a timestamp) and event ids are
random UUIDs, so the pk breaks ties and the order is total and stable. Each page costs two
queries whatever its size: the cursor's row, then the page (limit + 1 rows, to know whether more
follow). With an index on (tenant, created_at, id), as events have (migration 0007), the page is
an index range scan starting at the cursor, as fast on page 10,000 as on page 1.
"""

from django.db.models import Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class AfterCursorPagination(BasePagination):
    """Keyset pagination on (created_at, pk), the cursor being an object id (`after`).

    The view supplies `cursor_pk(text)` (the pk an id in the API names, or None when it names
    none) and `cursor_queryset()` (the tenant's unfiltered rows, where the cursor is looked up:
    a cursor of another tenant is as unknown as a made-up one).
    """

    cursor_query_param = "after"
    limit_query_param = "limit"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        limit = self.page_limit(request)
        after = request.query_params.get(self.cursor_query_param)
        if after:
            pk = view.cursor_pk(after)
            anchor = view.cursor_queryset().filter(pk=pk).values_list("created_at", "pk").first() if pk else None
            if anchor is None:
                raise ValidationError({self.cursor_query_param: [f"No object with id {after!r} to list after."]})
            created_at, pk = anchor
            # (created_at, pk) > (anchor): the created_at >= bound lets an index on (..., created_at, id)
            # start the scan at the cursor; the OR alone would be a filter over every earlier row.
            queryset = queryset.filter(
                Q(created_at__gte=created_at), Q(created_at__gt=created_at) | Q(created_at=created_at, pk__gt=pk)
            )
        rows = list(queryset.order_by("created_at", "pk")[: limit + 1])
        return self.remember(request, view, rows[:limit], has_more=len(rows) > limit)

    def remember(self, request, view, page: list, has_more: bool) -> list:
        """Keep what the response needs: the page and whether more follow."""
        self.request, self.view, self.page, self.has_more = request, view, page, has_more
        return page

    def page_limit(self, request) -> int:
        """The page size the request asks for (`limit`), checked."""
        text = request.query_params.get(self.limit_query_param)
        if text is None:
            return DEFAULT_LIMIT
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError({self.limit_query_param: [f"Use a whole number from 1 to {MAX_LIMIT}."]})
        return limit

    def get_paginated_response(self, data) -> Response:
        return Response({"data": data, "has_more": self.has_more, "next": self._next_link()})

    def _next_link(self) -> str | None:
        if not self.has_more:
            return None
        last = self.view.cursor_value(self.page[-1])
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, last)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["data", "has_more", "next"],
            "properties": {
                "data": schema,
                "has_more": {"type": "boolean", "description": "Whether more objects follow this page."},
                "next": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "The URL of the next page (after the last object of this one), or null.",
                },
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Only objects created after the one with this id (oldest first).",
                "schema": {"type": "string"},
            },
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
        ]
