"""The application's Celery app, set up the way Django projects do (Celery's
"First steps with Django"): settings under the CELERY_ namespace, tasks found
in each app's `tasks` module. `celery -A celery_app worker` runs the tasks
on Celery; routed to herald's queue (settings.CELERY_TASK_ROUTES), the same
`.delay()` calls run on herald instead."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

app = Celery("interop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
