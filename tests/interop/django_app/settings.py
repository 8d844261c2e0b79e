"""A minimal Django + Channels project for herald's interop tests: the
application's NotificationConsumer as the contract describes it, served by
daphne over the Redis channel layer. Configured from the environment the Rust
test sets (INTEROP_SECRET_KEY, INTEROP_REDIS_URL, INTEROP_PREFIX)."""

import os

SECRET_KEY = os.environ["INTEROP_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "rest_framework_simplejwt",
]
DATABASES = {}
USE_TZ = True
ROOT_URLCONF = "urls"
ASGI_APPLICATION = "asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ["INTEROP_REDIS_URL"]],
            "prefix": os.environ.get("INTEROP_PREFIX", "asgi"),
        },
    }
}
SIMPLE_JWT = {"ALGORITHM": "HS256", "SIGNING_KEY": SECRET_KEY}
