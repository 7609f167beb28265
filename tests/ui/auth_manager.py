"""The simple auth manager with one change for the UI tests: the VIEWER role may read connections.

The simple auth manager gives connections to OP and above only, for reading too, so it has no user who
may read pipeline state but not edit it. Real deployments have one (a FAB role with ``can_read`` on
Connections, a Keycloak policy): this subclass models it, everything else is the simple auth manager.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class ConnectionViewerAuthManager(SimpleAuthManager):
    def is_authorized_connection(self, *, method: Any, user: Any, details: Any = None) -> bool:
        if method == "GET" and (user.role or "").upper() == "VIEWER":
            return True
        return super().is_authorized_connection(method=method, user=user, details=details)
