"""The blocking baseline of the original article: a Flask view that waits for its Celery task.

    gunicorn -k gthread -w 10 --threads 3 bench.peers.flask_app:app

Each request holds one of the 30 threads from publish to result (`AsyncResult.get`), so at most 30
checks are in flight, however many clients wait. Same URLs and parameter rules as checkgate
(`GET /check/<type>?…`), same workers, same queues; the bench's task ids carry its queue prefix so
its cleanup finds their results.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Flask, jsonify, request

from tasks.celery import app as celery_app
from tasks.registry import ParamError, load_checks

CHECKS = load_checks()
ID_PREFIX = f"{os.environ.get('CHECKGATE_QUEUE_PREFIX', '')}flask-"

app = Flask(__name__)


@app.get("/health")
def health() -> Any:
    return jsonify(status="ok")


@app.get("/check/<type_name>")
def check(type_name: str) -> Any:
    """Validate, publish, block until the result: the whole request on one thread."""
    check = CHECKS.get(type_name)
    if check is None:
        return jsonify(error=f"unknown check type {type_name!r}"), 404
    try:
        kwargs = check.validate(request.args.to_dict())
    except ParamError as exc:
        return jsonify(error=f"invalid parameter {exc.field!r}: {exc.message}", field=exc.field), 400
    task_id = f"{ID_PREFIX}{uuid.uuid4().hex}"
    # What `.delay(**kwargs)` does, with an id of ours.
    result = celery_app.tasks[check.task_name].apply_async(kwargs=kwargs, task_id=task_id)
    try:
        value = result.get(timeout=check.default_timeout)
    except CeleryTimeout:
        return jsonify(id=task_id, error="timeout"), 504
    except Exception as exc:  # the task raised
        return jsonify(id=task_id, error=repr(exc)), 502
    return jsonify(id=task_id, type=check.name, state=result.state, result=value)
