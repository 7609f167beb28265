"""Authentication, authorization and cross-site request protection of the plugin's endpoints.

Every endpoint depends on :func:`current_user`: Airflow's own ``get_user`` dependency, which reads a
bearer token (API clients) or the UI's ``_token`` session cookie and validates it through the
configured auth manager (401 without a token). Permissions are the auth manager's connection
permissions: reading state needs ``GET`` on the connection, an edit needs ``PUT`` (403 otherwise).

Cross-site requests follow Airflow's own API: a request is authenticated by a bearer header (which a
browser never adds to a request another site makes) or by Airflow's ``_token`` session cookie, which
Airflow sets ``HttpOnly`` and ``SameSite=Lax`` (a browser does not send it with another site's POST).
Nothing compares the ``Origin`` header with the URL the api-server sees: behind a TLS-terminating
proxy that URL is ``http://...`` while the browser's origin is ``https://...``, so such a comparison
refuses every legitimate edit, or has to be loosened until it protects nothing. What the plugin adds,
because its HTML forms are requests a sibling subdomain (same *site*) can forge despite ``SameSite``:

- a cookie-authenticated mutation must carry the CSRF token bound to the session cookie (an HMAC
  keyed by the cookie, which another page cannot read), in the ``X-CSRF-Token`` header or the
  ``csrf_token`` form field; the pages embed it;
- and when the browser labels the request ``Sec-Fetch-Site: cross-site`` or ``same-site`` (the
  browser's own judgement, unaffected by proxies) it is refused even with a token.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Literal

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.resource_details import (
    ConnectionDetails,
    DagAccessEntity,
    DagDetails,
)
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, HTTPException, Request, status

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_CSRF_LABEL = b"airflow-state-provider csrf v1"

CurrentUser = Annotated[Any, Depends(get_user)]


def user_name(user: Any) -> str:
    return str(user.get_name())


#: what a UI request does to a connection's state: read it or edit it
Access = Literal["GET", "PUT"]


def can_access_connection(user: Any, conn_id: str, method: Access) -> bool:
    """``method`` is ``GET`` (read the state) or ``PUT`` (edit it)."""
    return bool(
        get_auth_manager().is_authorized_connection(
            method=method, details=ConnectionDetails(conn_id=conn_id), user=user
        )
    )


def require_connection(user: Any, conn_id: str, method: Access) -> None:
    if not can_access_connection(user, conn_id, method):
        what = "read" if method == "GET" else "edit"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"Forbidden: you may not {what} state of connection {conn_id!r}"
        )


def require_task_instance(user: Any, dag_id: str) -> None:
    allowed = get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=DagDetails(id=dag_id), user=user
    )
    if not allowed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"Forbidden: you may not read task instances of {dag_id!r}"
        )


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session cookie ('' without one: bearer clients need none)."""
    session = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not session:
        return ""
    return hmac.new(session.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def _bearer(request: Request) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(credentials)


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a cross-site mutation (see the module docstring). ``submitted`` is the form field's value;
    the header is read here. Raises ``HTTPException`` 403 naming what is missing."""
    if _bearer(request):
        return  # a browser never adds a bearer header to a request another site makes
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: the browser marked this request {fetch_site} (Sec-Fetch-Site); "
            "edit from the Pipeline state page",
        )
    expected = csrf_token(request)
    given = request.headers.get(CSRF_HEADER) or submitted or ""
    if not expected or not hmac.compare_digest(expected, given):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: missing or wrong CSRF token (send the {CSRF_HEADER} header the page gives)",
        )
