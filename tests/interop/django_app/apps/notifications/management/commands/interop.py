"""`manage.py interop '<json>'`: what herald's interop tests ask of the
application, through its own ORM. One JSON operation in, one JSON line out.

- {"op": "setup", "users": [{"id", "username", "is_active"}], "tasks": [{"title",
  "status", "deadline", "assignee", "created_by"}], "next_notification_id": N}
  creates users with those ids and the tasks, and moves the notification id
  sequence so the next row gets N; answers {"tasks": [ids]}.
- {"op": "notify", "user": U, "title", "message", "type", "data", "dedup_key"}
  creates a row as the application does and sends it with
  send_notification_ws; answers {"id": ...}.
- {"op": "notifications"}: every row, oldest id first.
- {"op": "columns", "table": T}: {column: database type} from introspection.
- {"op": "users", "first": N, "count": C}: C active users with ids N.., in
  bulk (the sidecar benchmark's audience); answers {"created": C}.
"""

import json
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection

from apps.notifications.models import Notification, send_notification_ws
from apps.tasks.models import Task


def move_sequence(next_id):
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, next_id]
            )
        else:
            cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [table])
            cursor.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, next_id - 1]
            )


def setup(op):
    User = get_user_model()
    for user in op.get("users", []):
        User.objects.create(
            id=user["id"], username=user["username"], is_active=user.get("is_active", True)
        )
    if connection.vendor == "postgresql" and op.get("users"):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                [User._meta.db_table, max(u["id"] for u in op["users"])],
            )
    tasks = []
    for task in op.get("tasks", []):
        deadline = task.get("deadline")
        tasks.append(
            Task.objects.create(
                title=task["title"],
                status=task.get("status", "todo"),
                deadline=datetime.fromisoformat(deadline) if deadline else None,
                assignee_id=task.get("assignee"),
                created_by_id=task.get("created_by"),
            ).id
        )
    if "next_notification_id" in op:
        move_sequence(op["next_notification_id"])
    return {"tasks": tasks}


def users(op):
    User = get_user_model()
    first, count = op["first"], op["count"]
    User.objects.bulk_create(
        (User(id=first + i, username=f"user{first + i}") for i in range(count)),
        batch_size=2000,
    )
    return {"created": count}


def notify(op):
    row = Notification.objects.create(
        user_id=op["user"],
        title=op["title"],
        message=op["message"],
        type=op.get("type", "general"),
        data=op.get("data"),
        dedup_key=op.get("dedup_key"),
    )
    send_notification_ws(row.user_id, row.payload())
    return {"id": row.id}


def notifications(_op):
    rows = Notification.objects.order_by("id")
    return [
        {
            "id": n.id,
            "user_id": n.user_id,
            "title": n.title,
            "message": n.message,
            "type": n.type,
            "is_read": n.is_read,
            "data": n.data,
            "dedup_key": n.dedup_key,
        }
        for n in rows
    ]


def columns(op):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = current_schema()",
                [op["table"]],
            )
            return dict(cursor.fetchall())
        cursor.execute(f"PRAGMA table_info({connection.ops.quote_name(op['table'])})")
        return {row[1]: row[2] for row in cursor.fetchall()}


class Command(BaseCommand):
    help = "Operations herald's interop tests ask of the application."

    def add_arguments(self, parser):
        parser.add_argument("operation")

    def handle(self, *args, **options):
        op = json.loads(options["operation"])
        answer = {
            "setup": setup,
            "notify": notify,
            "notifications": notifications,
            "columns": columns,
            "users": users,
        }[op["op"]](op)
        self.stdout.write(json.dumps(answer))
