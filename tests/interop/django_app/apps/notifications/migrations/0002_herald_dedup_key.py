# What an application adds for herald (docs/django.md gives this file): the
# `dedup_key` column and its unique constraint on (user, dedup_key). Each
# operation leaves the database alone when the column or an equal unique
# index is already there (on PostgreSQL `herald migrate` adds them itself),
# so it works before or after `herald migrate`. On SQLite it is required:
# Django rebuilds SQLite tables from its own model state, so a column only
# herald knew of would be lost at the application's next migration.

from django.db import migrations, models

TABLE_COLUMNS = ["user_id", "dedup_key"]


def existing(schema_editor, table):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, table)}
        constraints = connection.introspection.get_constraints(cursor, table)
    return columns, constraints


class AddFieldIfMissing(migrations.AddField):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        columns, _ = existing(schema_editor, model._meta.db_table)
        if self.name not in columns:
            super().database_forwards(app_label, schema_editor, from_state, to_state)


class AddUniqueIfMissing(migrations.AddConstraint):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        _, constraints = existing(schema_editor, model._meta.db_table)
        if not any(
            c.get("unique") and c.get("columns") == TABLE_COLUMNS for c in constraints.values()
        ):
            super().database_forwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0001_initial'),
    ]

    operations = [
        AddFieldIfMissing(
            model_name='notification',
            name='dedup_key',
            field=models.CharField(blank=True, editable=False, max_length=255, null=True),
        ),
        AddUniqueIfMissing(
            model_name='notification',
            constraint=models.UniqueConstraint(
                fields=('user', 'dedup_key'), name='notifications_notification_user_dedup'
            ),
        ),
    ]
