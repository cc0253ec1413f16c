from django.contrib import admin

from .models import Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "tenant", "is_active", "signature_scheme", "created_at")
    list_filter = ("is_active", "signature_scheme")
    search_fields = ("url", "tenant", "description")
    readonly_fields = ("disabled_reason", "disabled_at", "created_at", "updated_at")
