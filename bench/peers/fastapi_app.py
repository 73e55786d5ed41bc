"""The contender most new users pick today: FastAPI under uvicorn, `.delay()` then `AsyncResult.get`.

    uvicorn bench.peers.fastapi_app:app --port PORT   (uvicorn[standard]: uvloop and httptools)

The endpoint is `async def`, as FastAPI's tutorials write it: it publishes with the task's own
`apply_async` (what `.delay(**kwargs)` does, with an id carrying the bench's prefix) on the event loop —
a blocking publish with confirms, as such code does — then awaits `AsyncResult.get` in Starlette's
thread pool (`run_in_threadpool`: anyio's default limiter, 40 threads), so at most 40 checks are
awaited at once per process. Same URLs, parameter rules and answers as checkgate (`GET /check/<type>?…`,
404 unknown type, 400 bad parameter naming it, 504 on timeout, 502 when the task raised), same workers.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tasks.celery import app as celery_app
from tasks.registry import ParamError, load_checks

CHECKS = load_checks()
ID_PREFIX = f"{os.environ.get('CHECKGATE_QUEUE_PREFIX', '')}fastapi-"

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/check/{type_name}")
async def check(type_name: str, request: Request) -> Any:
    """Validate, publish, await the result in the thread pool."""
    check = CHECKS.get(type_name)
    if check is None:
        return JSONResponse({"error": f"unknown check type {type_name!r}"}, status_code=404)
    try:
        kwargs = check.validate(dict(request.query_params))
    except ParamError as exc:
        body = {"error": f"invalid parameter {exc.field!r}: {exc.message}", "field": exc.field}
        return JSONResponse(body, status_code=400)
    task_id = f"{ID_PREFIX}{uuid.uuid4().hex}"
    result = celery_app.tasks[check.task_name].apply_async(kwargs=kwargs, task_id=task_id)
    try:
        value = await run_in_threadpool(result.get, timeout=check.default_timeout)
    except CeleryTimeout:
        return JSONResponse({"id": task_id, "error": "timeout"}, status_code=504)
    except Exception as exc:  # the task raised
        return JSONResponse({"id": task_id, "error": repr(exc)}, status_code=502)
    return {"id": task_id, "type": check.name, "state": result.state, "result": value}
