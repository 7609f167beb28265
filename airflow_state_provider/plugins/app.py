"""The FastAPI app the plugin mounts in the api-server at ``/pipeline-state``.

JSON API (bearer token or the UI's session cookie)::

    GET  /api/pipelines                                     connections → datasets → pipelines
    GET  /api/connections/{conn}/datasets/{ds}/pipelines/{p}/versions?before=&limit=
    GET  .../versions/{n}                                   one version's document and incrementals
    GET  .../diff?from=&to=                                 leaf changes between two versions
    GET  .../incrementals?version=                          incrementals of a version (newest default)
    POST .../rollback | .../set | .../drop                  body: see :mod:`.models`; ``dry_run``
                                                            previews, a commit needs ``expect_version``
    GET  /api/task-instances?dag_id=&run_id=&task_id=&map_index=

HTML pages under ``/ui/`` (server-rendered, shown in the Airflow UI's iframe). Reading needs ``GET``
permission on the connection, edits ``PUT`` (see :mod:`.security`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from airflow_state_provider import operations
from airflow_state_provider.cli import VALUE_TYPES
from airflow_state_provider.destination.audit import AUDIT_TABLE
from airflow_state_provider.exceptions import PipelineNotFoundError, PipelineStateError
from airflow_state_provider.pipeline import Pipeline
from airflow_state_provider.plugins import browser, service
from airflow_state_provider.plugins.models import (
    FORM_FIELDS,
    DropBody,
    EditBody,
    RollbackBody,
    SetBody,
    from_form,
)
from airflow_state_provider.plugins.security import (
    CSRF_FIELD,
    Access,
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

# No /docs, /redoc or /openapi.json: FastAPI serves them without authentication, and its docs pages
# load their scripts from a CDN (the plugin loads nothing from the internet)
app = FastAPI(
    title="Pipeline state",
    description="Pipeline state committed by airflow-state-provider: history, diffs, incrementals, edits.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

#: The pages run no script and load nothing: a value that slipped past escaping could not run either,
#: and only Airflow's own UI may frame them (no clickjacking of the edit forms).
_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'; "
    "base-uri 'none'"
)


@app.middleware("http")
async def _security_headers(request: Request, call_next: Any) -> Any:
    response = await call_next(request)
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers.setdefault("Content-Security-Policy", _PAGE_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


_PIPELINE = "/connections/{conn_id}/datasets/{dataset}/pipelines/{pipeline_name}"
_PAGE = "/ui/p/{conn_id}/{dataset}/{pipeline_name}"


@app.exception_handler(service.BrowserError)
async def _browser_error(request: Request, exc: service.BrowserError) -> Any:
    if _is_page(request):
        return _html(
            request, "error", exc.status, title="Pipeline state", message=str(exc), back=_back(request)
        )
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
    status = 400
    if isinstance(exc, operations.ConcurrentEditError):
        status = 409
    elif isinstance(exc, PipelineNotFoundError):
        status = 404
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


# -- dependencies ----------------------------------------------------------------------------------


@dataclass
class OpenPipeline:
    """A pipeline of a connection the user may access, with the connection opened."""

    conn_id: str
    dataset: str
    pipeline_name: str
    href: str  #: the pipeline's page
    user: Any
    dest: service.Destination
    pipeline: Pipeline

    def context(self) -> dict[str, Any]:
        """What every page of the pipeline names (crumbs, links)."""
        return {
            "conn_id": self.conn_id,
            "dataset": self.dataset,
            "pipeline_name": self.pipeline_name,
            "base": self.href,
        }


def _open_pipeline(
    request: Request, conn_id: str, dataset: str, pipeline_name: str, user: Any, method: Access
) -> Iterator[OpenPipeline]:
    """Check ``method`` permission, open the connection and hand the pipeline to the endpoint; any
    failure of the endpoint other than an HTTP answer becomes a scrubbed :class:`BrowserError`."""
    require_connection(user, conn_id, method)
    href = _page_href(request, conn_id, dataset, pipeline_name)
    with service.destination(conn_id) as dest:
        try:
            yield OpenPipeline(
                conn_id, dataset, pipeline_name, href, user, dest, dest.pipeline(pipeline_name, dataset)
            )
        except (HTTPException, RequestValidationError):
            raise
        except Exception as exc:
            raise _fail(dest, exc) from None


def readable_pipeline(
    request: Request, conn_id: str, dataset: str, pipeline_name: str, user: CurrentUser
) -> Iterator[OpenPipeline]:
    yield from _open_pipeline(request, conn_id, dataset, pipeline_name, user, "GET")


async def _csrf_checked(request: Request) -> None:
    submitted = None
    if request.headers.get("content-type", "").startswith(_FORM_TYPES):
        submitted = (await request.form()).get(CSRF_FIELD)
    check_csrf(request, submitted if isinstance(submitted, str) else None)


def editable_pipeline(
    request: Request,
    conn_id: str,
    dataset: str,
    pipeline_name: str,
    user: CurrentUser,
    _csrf: Annotated[None, Depends(_csrf_checked)],
) -> Iterator[OpenPipeline]:
    yield from _open_pipeline(request, conn_id, dataset, pipeline_name, user, "PUT")


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
Readable = Annotated[OpenPipeline, Depends(readable_pipeline)]
Editable = Annotated[OpenPipeline, Depends(editable_pipeline)]
PageSize = Annotated[int, Query(ge=1, le=browser.MAX_PAGE_SIZE)]
VersionNumber = Annotated[int, Path(ge=0, le=2**63 - 1)]


# -- JSON API ------------------------------------------------------------------------------------------


@app.get("/api/pipelines")
def api_pipelines(request: Request, user: CurrentUser) -> list[dict]:
    """Readable connections, each with its pipelines (dataset, newest version and load, size)."""
    return _overview(request, user)


@app.get("/api" + _PIPELINE + "/versions")
def api_versions(p: Readable, before: str | None = None, limit: PageSize = browser.PAGE_SIZE) -> dict:
    """A page of the version history, newest first; pass ``next_before`` as ``before`` for the next."""
    page = browser.history_page(p.pipeline, before=before, limit=limit)
    return {
        "versions": [v.__dict__ for v in page.versions],
        "next_before": page.next_before,
        "limit": page.limit,
        "writers_recorded": page.audited,
    }


@app.get("/api" + _PIPELINE + "/versions/{number}")
def api_version(p: Readable, number: VersionNumber) -> dict:
    stored = browser.version(p.pipeline, number)
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
    p: Readable,
    old: Annotated[int, Query(alias="from", ge=0, le=2**63 - 1)],
    new: Annotated[int, Query(alias="to", ge=0, le=2**63 - 1)],
) -> dict:
    return {"from": old, "to": new, "changes": browser.diff(p.pipeline, old, new)}


@app.get("/api" + _PIPELINE + "/incrementals")
def api_incrementals(p: Readable, version: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None) -> dict:
    stored = operations.newest(p.pipeline) if version is None else browser.version(p.pipeline, version)
    return {"version": stored.version, "incrementals": browser.incrementals(stored.state)}


def _edit(p: OpenPipeline, edit: EditBody) -> dict:
    plan = service.plan_edit(p.pipeline, edit)
    out = service.plan_dict(plan)
    if edit.dry_run:
        return {**out, "dry_run": True, "committed": False}
    result = service.apply_edit(plan, user_name(p.user))
    return {
        **out,
        "dry_run": False,
        "committed": result.committed,
        "version": result.version,
        "load_id": result.load_id,
    }


@app.post("/api" + _PIPELINE + "/rollback")
def api_rollback(p: Editable, body: RollbackBody) -> dict:
    """Restore retained version ``version``; ``dry_run`` previews, a commit needs ``expect_version``."""
    return _edit(p, body)


@app.post("/api" + _PIPELINE + "/set")
def api_set(p: Editable, body: SetBody) -> dict:
    """Set the value at ``path`` (JSON text); ``dry_run`` previews, a commit needs ``expect_version``."""
    return _edit(p, body)


@app.post("/api" + _PIPELINE + "/drop")
def api_drop(p: Editable, body: DropBody) -> dict:
    """Drop resources (and their tables unless ``state_only``) or source-level state paths."""
    return _edit(p, body)


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
    map_index: Annotated[int | None, Query(ge=-1, le=2**31 - 1)] = None,
) -> dict:
    """What each try of the task instance restored, bound and committed."""
    commits, errors = _task_commits(request, user, dag_id, run_id, task_id, map_index)
    return {"commits": commits, "errors": errors}


# -- HTML pages ----------------------------------------------------------------------------------------


def _html(request: Request, name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(name, root=_root(request), **context), status_code=status)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> Any:
    if _is_page(request):
        return _html(request, "error", exc.status_code, title=f"Error {exc.status_code}", message=exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> Any:
    if _is_page(request):
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _html(
            request, "error", 422, title="Invalid request", message="; ".join(lines), back=_back(request)
        )
    return await request_validation_exception_handler(request, exc)


def _is_page(request: Request) -> bool:
    return request.url.path.startswith(f"{_root(request)}/ui/")


def _back(request: Request) -> str | None:
    params = request.path_params
    if all(k in params for k in ("conn_id", "dataset", "pipeline_name")):
        return _page_href(request, params["conn_id"], params["dataset"], params["pipeline_name"])
    return None


@app.get("/ui/", response_class=HTMLResponse)
def ui_index(request: Request, user: CurrentUser) -> HTMLResponse:
    return _html(request, "index", connections=_overview(request, user))


@app.get(_PAGE, response_class=HTMLResponse)
def ui_pipeline(
    request: Request, p: Readable, before: str | None = None, limit: PageSize = browser.PAGE_SIZE
) -> HTMLResponse:
    newest = operations.newest(p.pipeline)
    page = browser.history_page(p.pipeline, before=before, limit=limit)
    return _html(
        request,
        "pipeline",
        p={"pipeline_name": p.pipeline_name, "dataset_name": p.dataset},
        conn_id=p.conn_id,
        where=operations.where(p.pipeline),
        newest=newest,
        incrementals=browser.incrementals(newest.state),
        page=page,
        before=before,
        base=p.href,
        can_edit=can_access_connection(p.user, p.conn_id, "PUT"),
        csrf=csrf_token(request),
        value_types=VALUE_TYPES,
        audit_table=AUDIT_TABLE,
    )


@app.get(_PAGE + "/diff", response_class=HTMLResponse)
def ui_diff(
    request: Request,
    p: Readable,
    old: Annotated[int, Query(alias="from", ge=0, le=2**63 - 1)],
    new: Annotated[int, Query(alias="to", ge=0, le=2**63 - 1)],
) -> HTMLResponse:
    changes = browser.diff(p.pipeline, old, new)
    return _html(request, "diff", old=old, new=new, changes=changes, **p.context())


@app.get(_PAGE + "/version/{number}", response_class=HTMLResponse)
def ui_version(request: Request, p: Readable, number: VersionNumber) -> HTMLResponse:
    stored = browser.version(p.pipeline, number)
    document = json.dumps(operations.to_plain(stored.state), indent=2, ensure_ascii=False, sort_keys=True)
    return _html(
        request,
        "version",
        stored=stored,
        document=document,
        incrementals=browser.incrementals(stored.state),
        **p.context(),
    )


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@app.post(_PAGE + "/preview", response_class=HTMLResponse)
async def ui_preview(request: Request, p: Editable) -> HTMLResponse:
    """The plan of a form's edit, and a confirm form carrying its fields and the planned-on version."""
    form = await _form(request)
    edit = from_form(form, dry_run=True)
    plan = service.plan_dict(await run_in_threadpool(service.plan_edit, p.pipeline, edit))
    action = form["action"]  # one of FORM_FIELDS: from_form checked it
    carried = {k: v for k, v in form.items() if k in FORM_FIELDS[action]}
    carried.pop("dry_run", None)
    carried.pop("expect_version", None)
    return _html(
        request,
        "preview",
        plan=plan,
        params={"action": action, **carried},
        csrf=csrf_token(request),
        **p.context(),
    )


@app.post(_PAGE + "/apply")
async def ui_apply(request: Request, p: Editable) -> RedirectResponse:
    """Commit a confirmed preview; it must carry the version it was planned against."""
    edit = from_form(await _form(request), dry_run=False)
    plan = await run_in_threadpool(service.plan_edit, p.pipeline, edit)
    await run_in_threadpool(service.apply_edit, plan, user_name(p.user))
    return RedirectResponse(p.href, status_code=303)


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
