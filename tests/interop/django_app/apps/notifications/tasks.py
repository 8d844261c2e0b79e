"""The application's notification task, as its Celery workers run it: the
contract of herald's `notify` job (positional arguments in this order)."""

from celery import current_task, shared_task

from .models import Notification, send_notification_ws


@shared_task
def notify(user_id, title, message, notification_type="general", data=None):
    row, created = Notification.objects.get_or_create(
        user_id=user_id,
        dedup_key=f"notify:{current_task.request.id}",
        defaults={"title": title, "message": message, "type": notification_type, "data": data},
    )
    if created:
        send_notification_ws(user_id, row.payload())
    return {"created": int(created), "existing": int(not created)}
