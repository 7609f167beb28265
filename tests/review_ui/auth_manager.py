"""The simple auth manager with per-connection read policies, as a real deployment has them (a
Keycloak policy, a custom auth manager): ``alice`` may read connection ``conn_a`` only (allow-list);
``bob`` may read every connection except ``secrets_b`` (deny-list). Everything else is the simple auth
manager (OP and ADMIN edit connections; VIEWER reads nothing)."""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class PerConnectionAuthManager(SimpleAuthManager):
    def is_authorized_connection(self, *, method: Any, user: Any, details: Any = None) -> bool:
        conn_id = getattr(details, "conn_id", None)
        name = user.get_name()
        if name == "alice":
            return method == "GET" and conn_id == "conn_a"
        if name == "bob":
            return method == "GET" and conn_id != "secrets_b"
        return super().is_authorized_connection(method=method, user=user, details=details)
