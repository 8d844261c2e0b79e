# A later migration of the application, of the kind deployments apply while
# workers run: the id widened to 8 bytes (ALTER ... TYPE bigint on
# PostgreSQL, as moving to BigAutoField does), a longer title (varchar(255)
# to varchar(500)) and a new nullable column. Herald keeps working across it.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0002_herald_dedup_key'),
    ]

    operations = [
        migrations.AlterField(
            model_name='notification',
            name='id',
            field=models.BigAutoField(primary_key=True, serialize=False),
        ),
        migrations.AlterField(
            model_name='notification',
            name='title',
            field=models.CharField(max_length=500),
        ),
        migrations.AddField(
            model_name='notification',
            name='read_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
