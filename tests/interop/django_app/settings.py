"""A Django + Channels project shaped like the application herald serves:
the contract's models (`notifications.Notification`, `tasks.Task`) with their
own migrations, its NotificationConsumer served by daphne over the Redis
channel layer, and simplejwt tokens. Configured from the environment the Rust
tests set:

- INTEROP_SECRET_KEY, INTEROP_REDIS_URL, INTEROP_PREFIX: key and channel layer;
- INTEROP_DATABASE: postgres://USER@HOST:PORT/NAME or sqlite:///PATH;
- INTEROP_ID_VARIANT: the id widths of the project, as real projects have them:
  `auto` (DEFAULT_AUTO_FIELD AutoField, the default auth.User: 4-byte ids
  everywhere), `bigauto` (BigAutoField: 8-byte notification and task ids,
  4-byte user ids as auth.User keeps AutoField), `custom_user` (a custom user
  model with BigAutoField: 8-byte ids everywhere).
"""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = os.environ["INTEROP_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "urls"
ASGI_APPLICATION = "asgi.application"

VARIANT = os.environ.get("INTEROP_ID_VARIANT", "auto")
if VARIANT not in ("auto", "bigauto", "custom_user"):
    raise RuntimeError(f"INTEROP_ID_VARIANT: unknown variant {VARIANT!r}")
DEFAULT_AUTO_FIELD = (
    "django.db.models.AutoField" if VARIANT == "auto" else "django.db.models.BigAutoField"
)

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "rest_framework_simplejwt",
    "apps.notifications",
    "apps.tasks",
]
if VARIANT == "custom_user":
    INSTALLED_APPS.append("apps.accounts")
    AUTH_USER_MODEL = "accounts.User"


def database(url):
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path)}
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    raise RuntimeError(f"INTEROP_DATABASE: unsupported URL {url!r}")


DATABASES = {"default": database(os.environ["INTEROP_DATABASE"])}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("INTEROP_REDIS_URL", "redis://127.0.0.1:6379")],
            "prefix": os.environ.get("INTEROP_PREFIX", "asgi"),
        },
    }
}
SIMPLE_JWT = {"ALGORITHM": "HS256", "SIGNING_KEY": SECRET_KEY}

# Celery (celery_app.py), from the environment the Rust tests set:
# CELERY_BROKER_URL and CELERY_RESULT_BACKEND (empty: no results), and
# INTEROP_CELERY_QUEUE, the queue herald consumes, where the routes send
# every task of the two apps (the migration guide's CELERY_TASK_ROUTES) but
# the one the application keeps on its own Celery workers, `reindex`, routed
# by name (Celery matches a name before the patterns) to Celery's default
# queue; it counts its runs in the Redis at INTEROP_RUNS_URL.
# INTEROP_BEAT_SECONDS makes `celery beat` send overdue_check that often.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_SERIALIZER = os.environ.get("INTEROP_CELERY_SERIALIZER", "json")
CELERY_ACCEPT_CONTENT = ["json", "msgpack"]
HERALD_QUEUE = os.environ.get("INTEROP_CELERY_QUEUE", "herald")
CELERY_TASK_ROUTES = {
    "apps.tasks.tasks.reindex": {"queue": "celery"},
    "apps.tasks.tasks.*": {"queue": HERALD_QUEUE},
    "apps.notifications.tasks.*": {"queue": HERALD_QUEUE},
}
# The queue shapes a RabbitMQ deployment chooses (Celery's defaults when
# unset): quorum queues, and topic exchanges so that countdowns go by
# kombu's native delayed delivery (celery_delayed_*).
CELERY_TASK_DEFAULT_QUEUE_TYPE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE_TYPE", "classic")
CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = os.environ.get(
    "CELERY_TASK_CREATE_MISSING_QUEUE_TYPE", "classic"
)
CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = (
    os.environ.get("CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE") or None
)
# INTEROP_CELERY_DEAD_LETTER_EXCHANGE: herald's queue listed in
# CELERY_TASK_QUEUES with that x-dead-letter-exchange, as an application
# that keeps dead letters declares it.
if os.environ.get("INTEROP_CELERY_DEAD_LETTER_EXCHANGE"):
    from kombu import Exchange, Queue

    CELERY_TASK_QUEUES = [
        Queue(
            HERALD_QUEUE,
            Exchange(HERALD_QUEUE),
            routing_key=HERALD_QUEUE,
            queue_arguments={
                "x-dead-letter-exchange": os.environ["INTEROP_CELERY_DEAD_LETTER_EXCHANGE"]
            },
        )
    ]
INTEROP_RUNS_URL = os.environ.get("INTEROP_RUNS_URL", "")
if os.environ.get("INTEROP_BEAT_SECONDS"):
    CELERY_BEAT_SCHEDULE = {
        "overdue-check": {
            "task": "apps.tasks.tasks.overdue_check",
            "schedule": float(os.environ["INTEROP_BEAT_SECONDS"]),
        }
    }
