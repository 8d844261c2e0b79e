"""`manage.py interop '<json>'`: what herald's interop tests ask of the
application, through its own ORM. One JSON operation in (`-`: read from
standard input, for long ones), one JSON line out.

- {"op": "setup", "users": [{"id", "username", "is_active"}], "tasks": [{"title",
  "status", "deadline", "assignee", "created_by"}], "next_task_id": T,
  "next_notification_id": N} creates users with those ids, moves the task id
  sequence so the first task gets T, creates the tasks, and moves the
  notification id sequence so the next row gets N; answers {"tasks": [ids]}.
- {"op": "notify", "user": U, "title", "message", "type", "data", "dedup_key"}
  creates a row as the application does and sends it with
  send_notification_ws; answers {"id": ...}.
- {"op": "notifications"}: every row, oldest id first.
- {"op": "columns", "table": T}: {column: database type} from introspection.
- {"op": "celery_send", "calls": [{"task": "apps.tasks.tasks.file_attached",
  "how": "delay" | "apply_async" | "send_task", "args": [...], "kwargs": {...},
  "options": {"countdown": 4, "expires_in": -60, ...}}]} makes each call with
  the real celery package, as the application's code does (`expires_in`:
  `expires` that many seconds from now); answers {"ids": [task ids]}. With
  "protocol": 1 the messages are written in Celery's task protocol 1
  (`task_protocol = 1`, the body a dict naming the task) instead of 2.
  With "get": S the same process then waits up to S seconds for each
  result, as `celery_results` does, and answers {"ids", "results"}: Celery's
  rpc:// backend answers only the process that sent the task.
- {"op": "celery_results", "ids": [...], "timeout": S}: `AsyncResult(id).get()`
  for each: {"status", "result"} or {"status", "error": {"type", "module",
  "args"}} with the exception it raised.
- {"op": "celery_revoke", "ids": [...], "terminate": false}:
  `AsyncResult(id).revoke()` for each, as the application's code revokes a
  task it scheduled (a broadcast on the broker, no reply awaited); answers
  {"revoked": n}.
- {"op": "users", "first": N, "count": C}: C active users with ids N.., in
  bulk (the sidecar benchmark's audience); answers {"created": C}.
"""

import importlib
import json
import sys
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection

from apps.notifications.models import Notification, send_notification_ws
from apps.tasks.models import Task


def move_sequence(model, next_id):
    """The next row of `model` made by the database gets `next_id`."""
    table = model._meta.db_table
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
    if "next_task_id" in op:
        move_sequence(Task, op["next_task_id"])
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
        move_sequence(Notification, op["next_notification_id"])
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


def celery_send(op):
    from celery_app import app
    from django.utils import timezone

    if "protocol" in op:
        app.conf.task_protocol = op["protocol"]
    ids, sent = [], []
    for call in op["calls"]:
        args, kwargs = call.get("args", []), call.get("kwargs", {})
        options = dict(call.get("options", {}))
        if "expires_in" in options:
            options["expires"] = timezone.now() + timedelta(seconds=options.pop("expires_in"))
        how = call.get("how", "delay")
        if how == "send_task":
            result = app.send_task(call["task"], args=args, kwargs=kwargs, **options)
        else:
            module, name = call["task"].rsplit(".", 1)
            task = getattr(importlib.import_module(module), name)
            if how == "delay":
                result = task.delay(*args, **kwargs)
            else:
                result = task.apply_async(args, kwargs, **options)
        ids.append(result.id)
        sent.append(result)
    if "get" in op:
        return {"ids": ids, "results": [outcome(result, op["get"]) for result in sent]}
    return {"ids": ids}


def celery_revoke(op):
    from celery.result import AsyncResult
    from celery_app import app

    for task_id in op["ids"]:
        AsyncResult(task_id, app=app).revoke(terminate=op.get("terminate", False))
    return {"revoked": len(op["ids"])}


def celery_results(op):
    from celery.result import AsyncResult
    from celery_app import app

    timeout = op.get("timeout", 30)
    return [outcome(AsyncResult(task_id, app=app), timeout) for task_id in op["ids"]]


def outcome(result, timeout):
    """`result.get()`: {"status", "result"}, or {"status", "error"} with the
    exception it raised (the task's, or get()'s timeout)."""
    try:
        value = result.get(timeout=timeout)
        return {"status": result.status, "result": value}
    except Exception as error:
        return {
            "status": result.status,
            "error": {
                "type": type(error).__name__,
                "module": type(error).__module__,
                "args": [str(arg) for arg in error.args],
            },
        }


class Command(BaseCommand):
    help = "Operations herald's interop tests ask of the application."

    def add_arguments(self, parser):
        parser.add_argument("operation")

    def handle(self, *args, **options):
        operation = options["operation"]
        op = json.loads(sys.stdin.read() if operation == "-" else operation)
        answer = {
            "setup": setup,
            "notify": notify,
            "notifications": notifications,
            "columns": columns,
            "celery_send": celery_send,
            "celery_results": celery_results,
            "celery_revoke": celery_revoke,
            "users": users,
        }[op["op"]](op)
        self.stdout.write(json.dumps(answer))
