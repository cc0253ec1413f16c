from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/webhooks/", include("deliveries.api.urls")),  # the webhooks API for the shop's customers
]
