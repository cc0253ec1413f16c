from django.contrib import admin

from .models import Delivery, DeliveryAttempt, Event


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is not edited: events and attempts are shown, never changed."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "trigger",
        "started_at",
        "duration_ms",
        "response_status",
        "outcome",
        "error_class",
        "error_message",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "tenant", "created_at", "fanned_out_at")
    list_filter = ("type",)
    search_fields = ("=id", "=idempotency_key", "type", "tenant")
    date_hierarchy = "created_at"


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "event", "endpoint", "status", "attempt_count", "next_attempt_at", "last_status_code")
    list_filter = ("status",)
    list_select_related = ("event", "endpoint")
    search_fields = ("=event__id", "endpoint__url")
    raw_id_fields = ("event", "endpoint")
    inlines = [AttemptInline]
