"""URLs: the admin is the application; vendors call back on /callbacks/."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from cases.views import vendor_callback

admin.site.site_header = "DSAR case manager"
admin.site.site_title = "DSAR case manager"
admin.site.index_title = "Data subject requests"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/cases/case/", permanent=False)),
    path("admin/", admin.site.urls),
    path(
        "callbacks/<uuid:callback_id>/<str:token>/",
        vendor_callback,
        name="vendor-callback",
    ),
]
