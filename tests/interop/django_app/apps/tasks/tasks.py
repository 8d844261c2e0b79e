"""The application's task events and scans, as its Celery workers run them:
the contracts of herald's `file_attached`, `status_changed`,
`overdue_check` and `deadline_reminder` jobs (the same titles, messages,
data and dedup keys), called with `.delay()` by the application's views;
and `reindex`, which the application keeps on its own Celery workers."""

import time
from datetime import timedelta

import redis
from celery import current_task, shared_task
from django.conf import settings
from django.utils import timezone

from apps.notifications.models import Notification, send_notification_ws

from .models import Task

CLOSED = ("done", "completed", "cancelled", "closed")


def recipients(task, actor):
    """Assignee and creator, without the one who acted, without repeats."""
    users = []
    for user in (task.assignee_id, task.created_by_id):
        if user is not None and user != actor and user not in users:
            users.append(user)
    return users


def deliver(user_id, title, message, type_, data, dedup_key):
    row, created = Notification.objects.get_or_create(
        user_id=user_id,
        dedup_key=dedup_key,
        defaults={"title": title, "message": message, "type": type_, "data": data},
    )
    if created:
        send_notification_ws(user_id, row.payload())
    return created


def counted(flags):
    flags = list(flags)
    return {"created": sum(flags), "existing": len(flags) - sum(flags)}


@shared_task
def file_attached(task_id, file_id, file_name, uploaded_by):
    task = Task.objects.get(id=task_id)
    message = f'"{file_name}" was attached to task "{task.title}".'
    data = {"task_id": task.id, "file_id": file_id}
    return counted(
        deliver(user, "File Attached", message, "file_attached", data, f"file_attached:{file_id}")
        for user in recipients(task, uploaded_by)
    )


@shared_task
def status_changed(task_id, old_status, new_status, changed_by, reason=None):
    task = Task.objects.get(id=task_id)
    message = f'Task "{task.title}" moved from {old_status} to {new_status}.'
    if reason:
        message += f" Reason: {reason}"
    data = {"task_id": task.id, "old_status": old_status, "new_status": new_status}
    if reason:
        data["reason"] = reason
    key = f"status_changed:{current_task.request.id}"
    return counted(
        deliver(user, "Task Status Changed", message, "status_changed", data, key)
        for user in recipients(task, changed_by)
    )


def open_tasks():
    return Task.objects.exclude(status__in=CLOSED).filter(
        assignee__isnull=False, deadline__isnull=False
    )


@shared_task
def overdue_check():
    now = timezone.now()
    return counted(
        deliver(
            task.assignee_id,
            "Task Overdue",
            f'Task "{task.title}" is now overdue.',
            "overdue",
            {"task_id": task.id},
            f"overdue:{task.id}:{int(task.deadline.timestamp())}",
        )
        for task in open_tasks().filter(deadline__lt=now)
    )


@shared_task
def deadline_reminder(task_id=None):
    now = timezone.now()
    tasks = open_tasks().filter(deadline__gt=now, deadline__lte=now + timedelta(hours=24))
    if task_id is not None:
        tasks = tasks.filter(id=task_id)
    return counted(
        deliver(
            task.assignee_id,
            "Deadline Reminder",
            f'Task "{task.title}" is due in less than 24 hours.',
            "deadline_reminder",
            {"task_id": task.id},
            f"reminder:{task.id}:86400:{int(task.deadline.timestamp())}",
        )
        for task in tasks
    )


@shared_task
def reindex(seconds):
    """A task that stays on Celery (routed to Celery's default queue, not
    herald's): counts its run in the hash `interop:runs` (task id -> runs)
    at INTEROP_RUNS_URL, then works for `seconds`."""
    runs = redis.Redis.from_url(settings.INTEROP_RUNS_URL)
    runs.hincrby("interop:runs", current_task.request.id, 1)
    runs.close()
    time.sleep(seconds)
    return {"slept": seconds}
