"""A custom user model with 8-byte ids, as projects that set
AUTH_USER_MODEL to their own BigAutoField user have."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    id = models.BigAutoField(primary_key=True)
