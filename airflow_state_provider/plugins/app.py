"""The FastAPI app the plugin mounts in the api-server at ``/pipeline-state``.

JSON API (bearer token or the UI's session cookie)::

    GET  /api/pipelines                                     connections → datasets → pipelines
    GET  /api/connections/{conn}/datasets/{ds}/pipelines/{p}/versions?before=&limit=
    GET  .../versions/{n}                                   one version's document and incrementals
    GET  .../diff?from=&to=                                 leaf changes between two versions
    GET  .../incrementals?version=                          incrementals of a version (newest default)
    POST .../rollback | .../set | .../drop                  {"dry_run": true, ...} previews the plan
    GET  /api/task-instances?dag_id=&run_id=&task_id=&map_index=

HTML pages under ``/ui/`` (server-rendered, shown in the Airflow UI's iframe). Reading needs ``GET``
permission on the connection, edits ``PUT`` (see :mod:`.security`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from airflow_state_provider import operations
from airflow_state_provider.destination.audit import AUDIT_TABLE
from airflow_state_provider.exceptions import PipelineStateError
from airflow_state_provider.plugins import browser, service
from airflow_state_provider.plugins.security import (
    CSRF_FIELD,
    CurrentUser,
    can_access_connection,
    check_csrf,
    csrf_token,
    require_connection,
    require_task_instance,
    user_name,
)
from airflow_state_provider.plugins.templates import render

log = logging.getLogger("airflow_state_provider.plugins")

URL_PREFIX = "/pipeline-state"

app = FastAPI(
    title="Pipeline state",
    description="Pipeline state committed by airflow-state-provider: history, diffs, incrementals, edits.",
)

_PIPELINE = "/connections/{conn_id}/datasets/{dataset}/pipelines/{pipeline_name}"
_PAGE = "/ui/p/{conn_id}/{dataset}/{pipeline_name}"


@app.exception_handler(service.BrowserError)
async def _browser_error(request: Request, exc: service.BrowserError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _page_href(request: Request, conn_id: str, dataset: str, pipeline_name: str) -> str:
    parts = "/".join(quote(part, safe="") for part in (conn_id, dataset, pipeline_name))
    return f"{_root(request)}/ui/p/{parts}"


def _fail(dest: service.Destination | None, exc: Exception) -> service.BrowserError:
    """A bad request (an operations error names what is wrong) or a database failure, scrubbed."""
    if isinstance(exc, service.BrowserError):
        return exc
    status = 409 if isinstance(exc, operations.ConcurrentEditError) else 400
    if not isinstance(exc, (PipelineStateError, ValueError)):
        status = 502
        log.warning("pipeline state browser: %s", service.error_text(dest, exc))
    return service.BrowserError(service.error_text(dest, exc), status)


def _overview(request: Request, user: Any) -> list[dict]:
    out = []
    for conn_id in service.connection_ids():
        if not can_access_connection(user, conn_id, "GET"):
            continue
        entry: dict[str, Any] = {"conn_id": conn_id, "pipelines": [], "error": None}
        try:
            with service.destination(conn_id) as dest:
                entry.update(conn_type=dest.conn_type, where=dest.where)
                try:
                    for dataset in browser.datasets(dest.engine):
                        for p in browser.pipelines(dest.engine, dataset):
                            item = p.asdict()
                            item["href"] = _page_href(request, conn_id, dataset, p.pipeline_name)
                            entry["pipelines"].append(item)
                except Exception as exc:
                    entry["error"] = service.error_text(dest, exc)
        except service.BrowserError as exc:
            if exc.status == 404:  # an environment variable of another connection type
                continue
            entry.update(conn_type="?", where="", error=str(exc))
        out.append(entry)
    return out


# -- JSON API ------------------------------------------------------------------------------------------


@app.get("/api/pipelines")
def api_pipelines(request: Request, user: CurrentUser) -> list[dict]:
    """Readable connections, each with its pipelines (dataset, newest version and load, size)."""
    return _overview(request, user)


@app.get("/api" + _PIPELINE + "/versions")
def api_versions(
    conn_id: str,
    dataset: str,
    pipeline_name: str,
    user: CurrentUser,
    before: str | None = None,
    limit: int = Query(browser.PAGE_SIZE, ge=1, le=browser.MAX_PAGE_SIZE),
) -> dict:
    """A page of the version history, newest first; pass ``next_before`` as ``before`` for the next."""
    require_connection(user, conn_id, "GET")
    with service.destination(conn_id) as dest:
        try:
            page = browser.history_page(dest.pipeline(pipeline_name, dataset), before=before, limit=limit)
        except Exception as exc:
            raise _fail(dest, exc) from None
    return {
        "versions": [v.__dict__ for v in page.versions],
        "next_before": page.next_before,
        "limit": page.limit,
        "writers_recorded": page.audited,
    }


@app.get("/api" + _PIPELINE + "/versions/{number}")
def api_version(conn_id: str, dataset: str, pipeline_name: str, number: int, user: CurrentUser) -> dict:
    require_connection(user, conn_id, "GET")
    with service.destination(conn_id) as dest:
        try:
            stored = browser.version(dest.pipeline(pipeline_name, dataset), number)
        except Exception as exc:
            raise _fail(dest, exc) from None
    return {
        "version": stored.version,
        "load_id": stored.load_id,
        "created_at": stored.created_at.isoformat() if stored.created_at else None,
        "size": stored.size,
        "state": operations.to_plain(stored.state),
        "incrementals": browser.incrementals(stored.state),
    }


@app.get("/api" + _PIPELINE + "/diff")
def api_diff(
    conn_id: str,
    dataset: str,
    pipeline_name: str,
    user: CurrentUser,
    old: int = Query(alias="from"),
    new: int = Query(alias="to"),
) -> dict:
    require_connection(user, conn_id, "GET")
    with service.destination(conn_id) as dest:
        try:
            changes = browser.diff(dest.pipeline(pipeline_name, dataset), old, new)
        except Exception as exc:
            raise _fail(dest, exc) from None
    return {"from": old, "to": new, "changes": changes}


@app.get("/api" + _PIPELINE + "/incrementals")
def api_incrementals(
    conn_id: str, dataset: str, pipeline_name: str, user: CurrentUser, version: int | None = None
) -> dict:
    require_connection(user, conn_id, "GET")
    with service.destination(conn_id) as dest:
        try:
            pipeline = dest.pipeline(pipeline_name, dataset)
            stored = operations.newest(pipeline) if version is None else browser.version(pipeline, version)
        except Exception as exc:
            raise _fail(dest, exc) from None
    return {"version": stored.version, "incrementals": browser.incrementals(stored.state)}


def _edit(
    request: Request, user: Any, conn_id: str, dataset: str, pipeline_name: str, action: str, body: dict
) -> dict:
    check_csrf(request, None)
    require_connection(user, conn_id, "PUT")
    with service.destination(conn_id) as dest:
        try:
            plan = service.plan_edit(dest.pipeline(pipeline_name, dataset), action, body)
            out = service.plan_dict(plan)
            if body.get("dry_run"):
                return {**out, "dry_run": True, "committed": False}
            result = service.apply_edit(plan, user_name(user))
        except Exception as exc:
            raise _fail(dest, exc) from None
    return {
        **out,
        "dry_run": False,
        "committed": result.committed,
        "version": result.version,
        "load_id": result.load_id,
    }


@app.post("/api" + _PIPELINE + "/{action}")
def api_edit(
    request: Request,
    conn_id: str,
    dataset: str,
    pipeline_name: str,
    action: str,
    user: CurrentUser,
    body: Annotated[dict | None, Body()] = None,
) -> dict:
    """``rollback`` ``{version}``, ``set`` ``{path, value, value_type, create}``, ``drop`` ``{resources,
    state_paths, state_only}``; each with ``dry_run`` (preview only) and ``expect_version``."""
    if action not in service.ACTIONS:
        raise HTTPException(404, f"unknown action {action!r}; use one of {', '.join(service.ACTIONS)}")
    return _edit(request, user, conn_id, dataset, pipeline_name, action, body or {})


def _task_commits(
    request: Request, user: Any, dag_id: str, run_id: str, task_id: str, map_index: int | None
) -> tuple[list[dict], list[str]]:
    require_task_instance(user, dag_id)
    commits, errors = [], []
    for conn_id in service.connection_ids():
        if not can_access_connection(user, conn_id, "GET"):
            continue
        try:
            with service.destination(conn_id) as dest:
                try:
                    for dataset in browser.audit_datasets(dest.engine):
                        for c in browser.task_commits(
                            dest.engine, dataset, dag_id, run_id, task_id, map_index
                        ):
                            c["conn_id"] = conn_id
                            c["href"] = _page_href(request, conn_id, dataset, c["pipeline_name"])
                            commits.append(c)
                except Exception as exc:
                    errors.append(f"{conn_id}: {service.error_text(dest, exc)}")
        except service.BrowserError as exc:
            if exc.status != 404:
                errors.append(str(exc))
    commits.sort(key=lambda c: c["load_id"])
    return commits, errors


@app.get("/api/task-instances")
def api_task_instance(
    request: Request,
    user: CurrentUser,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = None,
) -> dict:
    """What each try of the task instance restored, bound and committed."""
    commits, errors = _task_commits(request, user, dag_id, run_id, task_id, map_index)
    return {"commits": commits, "errors": errors}


# -- HTML pages ----------------------------------------------------------------------------------------


def _html(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(name, root=_root(request), **context), status_code=status)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> Any:
    if request.url.path.startswith(f"{_root(request)}/ui/"):
        return _html(request, "error", exc.status_code, title=f"Error {exc.status_code}", message=exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _page_error(request: Request, exc: service.BrowserError, back: str | None = None) -> HTMLResponse:
    return _html(request, "error", exc.status, title="Pipeline state", message=str(exc), back=back)


@app.get("/ui/", response_class=HTMLResponse)
def ui_index(request: Request, user: CurrentUser) -> HTMLResponse:
    return _html(request, "index", connections=_overview(request, user))


@app.get(_PAGE, response_class=HTMLResponse)
def ui_pipeline(
    request: Request,
    conn_id: str,
    dataset: str,
    pipeline_name: str,
    user: CurrentUser,
    before: str | None = None,
    limit: int = Query(browser.PAGE_SIZE, ge=1, le=browser.MAX_PAGE_SIZE),
) -> HTMLResponse:
    require_connection(user, conn_id, "GET")
    base = _page_href(request, conn_id, dataset, pipeline_name)
    with service.destination(conn_id) as dest:
        try:
            pipeline = dest.pipeline(pipeline_name, dataset)
            newest = operations.newest(pipeline)
            page = browser.history_page(pipeline, before=before, limit=limit)
        except Exception as exc:
            return _page_error(request, _fail(dest, exc))
        where = operations.where(pipeline)
    summary = {"pipeline_name": pipeline_name, "dataset_name": dataset}
    return _html(
        request,
        "pipeline",
        p=summary,
        conn_id=conn_id,
        where=where,
        newest=newest,
        incrementals=browser.incrementals(newest.state),
        page=page,
        before=before,
        base=base,
        can_edit=can_access_connection(user, conn_id, "PUT"),
        csrf=csrf_token(request),
        value_types=operations.VALUE_TYPES,
        audit_table=AUDIT_TABLE,
    )


@app.get(_PAGE + "/diff", response_class=HTMLResponse)
def ui_diff(
    request: Request,
    conn_id: str,
    dataset: str,
    pipeline_name: str,
    user: CurrentUser,
    old: int = Query(alias="from"),
    new: int = Query(alias="to"),
) -> HTMLResponse:
    require_connection(user, conn_id, "GET")
    base = _page_href(request, conn_id, dataset, pipeline_name)
    with service.destination(conn_id) as dest:
        try:
            changes = browser.diff(dest.pipeline(pipeline_name, dataset), old, new)
        except Exception as exc:
            return _page_error(request, _fail(dest, exc), base)
    context = {"conn_id": conn_id, "dataset": dataset, "pipeline_name": pipeline_name, "base": base}
    return _html(request, "diff", old=old, new=new, changes=changes, **context)


@app.get(_PAGE + "/version/{number}", response_class=HTMLResponse)
def ui_version(
    request: Request, conn_id: str, dataset: str, pipeline_name: str, number: int, user: CurrentUser
) -> HTMLResponse:
    require_connection(user, conn_id, "GET")
    base = _page_href(request, conn_id, dataset, pipeline_name)
    with service.destination(conn_id) as dest:
        try:
            stored = browser.version(dest.pipeline(pipeline_name, dataset), number)
        except Exception as exc:
            return _page_error(request, _fail(dest, exc), base)
    document = json.dumps(operations.to_plain(stored.state), indent=2, ensure_ascii=False, sort_keys=True)
    context = {"conn_id": conn_id, "dataset": dataset, "pipeline_name": pipeline_name, "base": base}
    return _html(
        request,
        "version",
        stored=stored,
        document=document,
        incrementals=browser.incrementals(stored.state),
        **context,
    )


_FORM_FIELDS = (
    "action",
    "version",
    "path",
    "value",
    "value_type",
    "create",
    "resources",
    "state_paths",
    "state_only",
)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


@app.post(_PAGE + "/preview", response_class=HTMLResponse)
async def ui_preview(
    request: Request, conn_id: str, dataset: str, pipeline_name: str, user: CurrentUser
) -> HTMLResponse:
    form = await _form(request)
    check_csrf(request, form.get(CSRF_FIELD))
    require_connection(user, conn_id, "PUT")
    params = {k: form[k] for k in _FORM_FIELDS if k in form}
    return await _run_in_thread(_preview_page, request, conn_id, dataset, pipeline_name, params)


def _preview_page(
    request: Request, conn_id: str, dataset: str, pipeline_name: str, params: dict
) -> HTMLResponse:
    base = _page_href(request, conn_id, dataset, pipeline_name)
    with service.destination(conn_id) as dest:
        try:
            plan = service.plan_edit(dest.pipeline(pipeline_name, dataset), params.get("action", ""), params)
        except Exception as exc:
            return _page_error(request, _fail(dest, exc), base)
    context = {"conn_id": conn_id, "dataset": dataset, "pipeline_name": pipeline_name, "base": base}
    return _html(
        request, "preview", plan=service.plan_dict(plan), params=params, csrf=csrf_token(request), **context
    )


@app.post(_PAGE + "/apply")
async def ui_apply(
    request: Request, conn_id: str, dataset: str, pipeline_name: str, user: CurrentUser
) -> Any:
    form = await _form(request)
    check_csrf(request, form.get(CSRF_FIELD))
    require_connection(user, conn_id, "PUT")
    params = {k: form[k] for k in (*_FORM_FIELDS, "expect_version") if k in form}
    return await _run_in_thread(
        _apply_page, request, user_name(user), conn_id, dataset, pipeline_name, params
    )


def _apply_page(
    request: Request, user: str, conn_id: str, dataset: str, pipeline_name: str, params: dict
) -> Any:
    base = _page_href(request, conn_id, dataset, pipeline_name)
    with service.destination(conn_id) as dest:
        try:
            plan = service.plan_edit(dest.pipeline(pipeline_name, dataset), params.get("action", ""), params)
            service.apply_edit(plan, user)
        except Exception as exc:
            return _page_error(request, _fail(dest, exc), base)
    return RedirectResponse(base, status_code=303)


async def _run_in_thread(func: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(func, *args)


@app.get("/ui/ti", response_class=HTMLResponse)
def ui_task_instance(
    request: Request,
    user: CurrentUser,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: str | None = None,
) -> HTMLResponse:
    index = int(map_index) if map_index and re.fullmatch(r"-?[0-9]{1,9}", map_index) else None
    commits, errors = _task_commits(request, user, dag_id, run_id, task_id, index)
    return _html(
        request,
        "ti",
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=index,
        commits=commits,
        errors=errors,
    )
