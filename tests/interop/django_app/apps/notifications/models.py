"""The application's notifications and its `send_notification_ws` helper, as
the contract describes them. `dedup_key` and its unique constraint are what
herald needs in the table (migration 0002, the one the docs give).
Migration 0003 is the next release's change, which the tests apply while
herald runs; this code is the release before it (Django reads the columns
it knows)."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import models


class Notification(models.Model):
    class Type(models.TextChoices):
        GENERAL = "general"
        DEADLINE_REMINDER = "deadline_reminder"
        OVERDUE = "overdue"
        FILE_ATTACHED = "file_attached"
        STATUS_CHANGED = "status_changed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    title = models.CharField(max_length=255)
    message = models.TextField()
    type = models.CharField(max_length=50, choices=Type.choices, default=Type.GENERAL)
    is_read = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    data = models.JSONField(null=True, blank=True)
    # herald's: at most one notification per (user, dedup_key).
    dedup_key = models.CharField(max_length=255, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "dedup_key"], name="notifications_notification_user_dedup"
            )
        ]

    def payload(self):
        return {
            "id": self.id,
            "title": self.title,
            "message": self.message,
            "notification_type": self.type,
            "is_read": self.is_read,
            "created_at": self.created_at.isoformat(),
            "data": self.data or {},
        }


def send_notification_ws(user_id, data):
    """The one publishing path of the application (the contract's helper)."""
    async_to_sync(get_channel_layer().group_send)(
        f"notifications_{user_id}", {"type": "send_notification", "data": data}
    )
