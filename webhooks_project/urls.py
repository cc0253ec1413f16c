from django.contrib import admin
from django.urls import include, path

from deliveries.views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view),
    path("api/webhooks/", include("deliveries.api.urls")),
]
