"""The id field class makemigrations would have written into an initial
migration in this project: one migration set serves the three id variants
(settings.INTEROP_ID_VARIANT), as three real projects would each have theirs."""

from django.conf import settings
from django.utils.module_loading import import_string


def default_auto_field(**kwargs):
    return import_string(settings.DEFAULT_AUTO_FIELD)(
        auto_created=True, primary_key=True, serialize=False, verbose_name="ID", **kwargs
    )
