"""PostgreSQL: indexes for the admin's case-insensitive name prefix search (istartswith).

Django compiles ``first_name__istartswith`` to ``UPPER(first_name::text) LIKE UPPER('x%')``;
these expression indexes with text_pattern_ops answer it without scanning the table.
SQLite (the embedded default) has no operator classes: there this migration does nothing.
"""

from django.db import migrations

COLUMNS = ("first_name", "last_name")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS case_{column}_prefix_idx "
            f"ON cases_case (UPPER({column}::text) text_pattern_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS case_{column}_prefix_idx")


class Migration(migrations.Migration):
    dependencies = [("cases", "0002_roles")]

    operations = [migrations.RunPython(create, drop)]
