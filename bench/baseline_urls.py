"""The baseline the admin is compared with: a plain ModelAdmin for Case, Django's defaults.

Mounted only by bench.admin_scale (``override_settings(ROOT_URLCONF=...)``), on its own
AdminSite so that the product's registration is untouched. ``search_fields`` on the e-mail
is what a first version of any admin would have: ``icontains``, and a full result count.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from cases.models import Case

site = admin.AdminSite(name="baseline")


class PlainCaseAdmin(admin.ModelAdmin):
    search_fields = ("email",)


site.register(Case, PlainCaseAdmin)

urlpatterns = [path("admin/", site.urls)]
