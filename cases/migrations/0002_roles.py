"""The two roles: DPO (decides and receives personal data) and Support (records and reads)."""

from django.db import migrations

ROLES = {
    "DPO": [
        ("cases", "view_case"),
        ("cases", "add_case"),
        ("cases", "change_case"),
        ("cases", "approve_case"),
        ("cases", "download_archive"),
        ("cases", "view_caseevent"),
        ("connectors", "view_vendoraccount"),
    ],
    "Support": [
        ("cases", "view_case"),
        ("cases", "add_case"),
        ("cases", "view_caseevent"),
    ],
}


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure they exist now.
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        permissions = [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in codenames
        ]
        group.permissions.set(permissions)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0001_initial"),
        ("connectors", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
