"""Adversarial review of the "Pipeline state" plugin against a real api-server (simple auth manager
with per-connection read policies, see ``auth_manager.py``). Faults are ``xfail(strict=True)``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.review_ui.stack import (
    EVIL,
    KEY,
    SECRETS,
    VALUE,
    make_stack,
    populate,
    start_api_server,
)

pytestmark = [pytest.mark.airflow, pytest.mark.e2e]

PS = "/pipeline-state"
A = f"{PS}/api/connections/conn_a/datasets/ds/pipelines/plain"
B = f"{PS}/api/connections/secrets_b/datasets/secret_ds/pipelines/secret_pipe"
PAGE_A = f"{PS}/ui/p/conn_a/ds/plain"
PAGE_B = f"{PS}/ui/p/secrets_b/secret_ds/secret_pipe"


class Live:
    def __init__(self, base_url: str, jwt_secret: str, passwords: dict[str, str], root: Path) -> None:
        self.base_url, self.jwt_secret, self.root = base_url, jwt_secret, root
        with httpx.Client(base_url=base_url, timeout=60) as c:
            self.tokens = {
                u: c.post("/auth/token", json={"username": u, "password": p}).json()["access_token"]
                for u, p in passwords.items()
            }
        self.seen: list[str] = []  # every response body, for the secrets check

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        headers.update(kwargs.pop("headers", {}))
        hooks = {"response": [self._keep]}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120, event_hooks=hooks, **kwargs)

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.seen.append(response.text + str(response.headers))

    def csrf(self, browser: httpx.Client, page: str = PAGE_A) -> str:
        return re.search(r'name="csrf_token" value="([0-9a-f]+)"', browser.get(page).text).group(1)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    reuse = os.environ.get("REVIEW_UI_ROOT")
    if reuse:  # a stack started by ``python -m tests.review_ui.stack ROOT``
        root = Path(reuse)
        _, passwords = make_stack(root)
        yield Live((root / "base_url").read_text(), (root / "jwt_secret").read_text(), passwords, root)
        return
    root = tmp_path_factory.mktemp("review-ui")
    populate(root)
    stack, passwords = make_stack(root)
    with _api_only(stack):
        yield Live(stack.base_url, stack.env["AIRFLOW__API_AUTH__JWT_SECRET"], passwords, root)


class _api_only:
    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def __enter__(self) -> None:
        try:
            start_api_server(self.stack, 300)
        except Exception:
            self.stack.print_service_logs()
            self.stack.stop(30)
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stack.stop(30)


def _routes() -> list[tuple[str, str]]:
    from airflow_state_provider.plugins.app import app

    out = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", ()) or ()):
            if method in ("HEAD",) or route.path.startswith(("/docs", "/redoc", "/openapi")):
                continue
            path = route.path.format(conn_id="conn_a", dataset="ds", pipeline_name="plain", number=1)
            out.append((method, PS + path))
    return out


# -- authentication ---------------------------------------------------------------------------------


def test_every_route_needs_a_valid_token(live: Live):
    routes = _routes()
    assert len(routes) >= 14, routes
    real = jwt.decode(live.tokens["editor"], options={"verify_signature": False})
    now = int(time.time())
    expired = jwt.encode(
        {**real, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, live.jwt_secret, algorithm="HS512"
    )
    unsigned = jwt.encode({**real}, key=None, algorithm="none")
    wrong_key = jwt.encode({**real}, "not-the-secret-" * 4, algorithm="HS512")
    params = {"dag_id": "d", "run_id": "r", "task_id": "t", "from": 1, "to": 2}
    for token in (None, expired, unsigned, wrong_key, "garbage"):
        for how in ("bearer", "cookie"):
            if token is None and how == "cookie":
                continue
            kw: dict[str, Any] = {}
            if token and how == "bearer":
                kw["headers"] = {"Authorization": f"Bearer {token}"}
            elif token:
                kw["cookies"] = {"_token": token}
            with live.client(**kw) as c:
                for method, path in routes:
                    r = c.request(method, path, params=params, json={"version": 1, "dry_run": True})
                    # Airflow's own get_user: 401 without a token, 403 "Invalid JWT token" for a bad one
                    expected = (401,) if token is None else (401, 403)
                    assert r.status_code in expected, (how, token and token[:12], method, path, r.status_code)


def test_a_logged_out_token_is_refused(live: Live):
    """Airflow revokes a token at logout (``/auth/logout``); the plugin must refuse it too."""
    with httpx.Client(base_url=live.base_url, timeout=60) as c:
        pw = c.post("/auth/token", json={"username": "editor", "password": "editor-pw"}).json()
    token = pw["access_token"]
    with httpx.Client(base_url=live.base_url, cookies={"_token": token}, timeout=60) as c:
        c.get("/auth/logout", follow_redirects=False)
    with httpx.Client(base_url=live.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        core = c.get("/api/v2/connections").status_code
        plugin = c.get(f"{A}/versions").status_code
    assert (core, plugin) in ((401, 401), (200, 200)), (core, plugin)


# -- authorization ----------------------------------------------------------------------------------


def test_users_see_only_the_connections_they_may_read(live: Live):
    with live.client("alice") as alice:
        assert [c["conn_id"] for c in alice.get(f"{PS}/api/pipelines").json()] == ["conn_a"]
        for path in (
            f"{B}/versions",
            f"{B}/diff?from=1&to=2",
            f"{B}/incrementals",
            f"{B}/versions/1",
            PAGE_B,
        ):
            assert alice.get(path).status_code == 403, path
    with live.client("bob") as bob:
        assert "secrets_b" not in [c["conn_id"] for c in bob.get(f"{PS}/api/pipelines").json()]
        assert bob.get(f"{B}/versions").status_code == 403


@pytest.mark.parametrize("spelling", ["SECRETS_B", "Secrets_b", "\u017fecrets_b", "secret\u017f_b"])
def test_a_connection_id_spelled_differently_is_not_another_connection(live: Live, spelling: str):
    """Found here: Airflow resolves AIRFLOW_CONN_SECRETS_B for any spelling of secrets_b, and permissions were
    checked on the id as spelled, so SECRETS_B read secrets_b past a policy denying secrets_b."""
    with live.client("bob") as bob:
        answer = bob.get(f"{B.replace('/secrets_b/', f'/{spelling}/')}/versions")
        page = bob.get(PAGE_B.replace("/secrets_b/", f"/{spelling}/"))
    assert answer.status_code == 404 and "not found" in answer.json()["detail"], answer.text[:300]
    assert page.status_code == 404 and "not found" in page.text and "History" not in page.text
    with live.client("editor") as editor:  # the listed spelling still works, the other does not
        assert editor.get(f"{B}/versions").status_code == 200
        assert editor.get(f"{B.replace('/secrets_b/', f'/{spelling}/')}/versions").status_code == 404


def test_a_reader_cannot_edit_by_json_form_or_alias(live: Live):
    with live.client(cookies={"_token": live.tokens["bob"]}) as bob:
        page = bob.get(PAGE_A)
        assert page.status_code == 200 and 'name="csrf_token"' not in page.text
        import hashlib
        import hmac

        csrf = hmac.new(live.tokens["bob"].encode(), b"airflow-state-provider csrf v1", hashlib.sha256)
        token = csrf.hexdigest()
        for path, kw in (
            (f"{PAGE_A}/preview", {"data": {"action": "rollback", "version": "1", "csrf_token": token}}),
            (
                f"{PAGE_A}/apply",
                {"data": {"action": "rollback", "version": "1", "expect_version": "2", "csrf_token": token}},
            ),
            (
                f"{A}/rollback",
                {"json": {"version": 1, "expect_version": 2}, "headers": {"X-CSRF-Token": token}},
            ),
            (
                f"{A}/set",
                {
                    "json": {"path": "x", "value": "1", "create": True, "expect_version": 2},
                    "headers": {"X-CSRF-Token": token},
                },
            ),
            (
                f"{A}/drop",
                {"json": {"resources": ["re:.*"], "expect_version": 2}, "headers": {"X-CSRF-Token": token}},
            ),
            (
                f"{A.replace('/conn_a/', '/CONN_A/')}/rollback",
                {"json": {"version": 1, "expect_version": 2}, "headers": {"X-CSRF-Token": token}},
            ),
        ):
            assert bob.post(path, **kw).status_code == 403, path
    with live.client("editor") as editor:
        assert editor.get(f"{A}/versions").json()["versions"][0]["version"] == 2  # nothing written


def test_cross_site_mutations_are_refused(live: Live):
    with live.client(cookies={"_token": live.tokens["editor"]}) as browser:
        # what a form on another site can send: text/plain, no token
        forged = browser.post(
            f"{A}/rollback", content='{"version": 1, "dry_run": true}', headers={"content-type": "text/plain"}
        )
        assert forged.status_code == 403
        form = {"action": "rollback", "version": "1", "expect_version": "2"}
        assert browser.post(f"{PAGE_A}/apply", data=form).status_code == 403
        other = live.csrf(browser)  # the editor's token does not work with another session's cookie
    with live.client(cookies={"_token": live.tokens["viewer"]}) as browser:
        assert browser.post(f"{PAGE_A}/apply", data={**form, "csrf_token": other}).status_code == 403


# -- XSS, secrets, hostile input --------------------------------------------------------------------


def test_hostile_names_and_values_are_escaped_under_a_strict_policy(live: Live):
    from urllib.parse import quote

    evil = quote(EVIL, safe="")
    pages = [
        f"{PS}/ui/",
        f"{PS}/ui/p/conn_a/ds/{evil}",
        f"{PS}/ui/p/conn_a/ds/{evil}/version/2",
        f"{PS}/ui/p/conn_a/ds/{evil}/diff?from=1&to=2",
        f"{PS}/ui/p/conn_a/ds/<script>x",
        f"{PS}/ui/p/conn_a/<script>/x",
        f"{PS}/ui/ti?dag_id=<b>d&run_id=<i>r&task_id=<s>t&map_index=<x>",
        f"{PAGE_A}?before=<script>",
    ]
    with live.client(cookies={"_token": live.tokens["editor"]}) as browser:
        for page in pages:
            r = browser.get(page)
            assert r.status_code < 500, page
            policy = r.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "script-src" not in policy, page
            for raw in ("<img src=x", "<script>", "<b>d", "<i>r", KEY, VALUE):
                assert raw not in r.text, (page, raw)


def test_bad_input_is_a_clear_4xx(live: Live):
    with live.client("editor") as editor:
        sqlish = editor.get(f"{A}/versions", params={"before": "' OR 1=1--"})
        assert sqlish.status_code == 200 and sqlish.json()["versions"] == []  # a bound value, no injection
        for path, params in (
            (f"{A}/versions", {"limit": 0}),
            (f"{A}/diff", {"from": 1, "to": 99}),
            (f"{A}/versions/99", {}),
            (f"{PS}/api/connections/conn_a/datasets/ds%00x/pipelines/plain/versions", {}),
            (f"{PS}/api/connections/conn_a/datasets/ds/pipelines/pl%00ain/versions", {}),
            (f"{PS}/api/connections/conn_a/datasets/%ED%A0%80/pipelines/plain/versions", {}),
            (f"{PS}/api/connections/%ED%A0%80/datasets/ds/pipelines/x/versions", {}),
            (f"{PS}/api/connections/conn_a/datasets/x%2F..%2F..%2Fb%2Fwh/pipelines/p/versions", {}),
            (f"{PS}/api/task-instances", {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": "x"}),
        ):
            r = editor.get(path, params=params)
            assert 400 <= r.status_code < 500, (path, params, r.status_code, r.text[:200])
        for action, body in (
            ("drop", {"resources": ["re:("], "dry_run": True}),
            ("drop", {"state_paths": ["../../x"], "dry_run": True}),
            ("set", {"path": "sources..x", "value": "1", "dry_run": True}),
            ("rollback", {"version": 2**63 - 1, "dry_run": True}),
        ):
            r = editor.post(f"{A}/{action}", json=body)
            assert r.status_code == 400 and r.json()["detail"], (action, body, r.text[:200])
        assert not list((live.root / "a").glob("wh__x*")) and not list((live.root / "a").glob("*%*"))


def test_a_missing_pipeline_is_a_404(live: Live):
    with live.client("editor") as editor:
        r = editor.get(f"{PS}/api/connections/conn_a/datasets/ds/pipelines/nope/versions")
    assert r.status_code == 404, r.text[:200]


def test_zz_no_secret_in_any_response_or_log(live: Live):
    """Last: every response this module saw, the overview with unreachable connections, the log."""
    with live.client("editor") as editor:
        editor.get(f"{PS}/api/pipelines")
        editor.get(f"{PS}/ui/")
        editor.get(f"{PS}/api/connections/pg_bad/datasets/ds/pipelines/p/versions")
        editor.get(f"{PS}/api/connections/url_bad/datasets/ds/pipelines/p/versions")
    assert live.seen
    logs = "".join(p.read_text(errors="replace") for p in live.root.glob("*.log"))
    for secret in SECRETS:
        assert not [t for t in live.seen if secret in t], secret
        assert secret not in logs, secret


def test_the_api_description_needs_a_token_too(live: Live):
    with live.client() as anonymous:
        for path in ("/docs", "/redoc", "/openapi.json"):
            answer = anonymous.get(PS + path)
            assert answer.status_code in (401, 404), (path, answer.status_code)
            assert "cdn.jsdelivr.net" not in answer.text


def test_a_replayed_confirm_form_writes_nothing(live: Live):
    """The confirm form carries the version it was planned against: submitting it twice (a replay, a
    double click, the back button) commits once; the second is a 409."""
    with live.client(cookies={"_token": live.tokens["editor"]}) as browser:
        newest = browser.get(f"{A}/versions").json()["versions"][0]["version"]
        form = {
            "action": "rollback",
            "version": "1",
            "expect_version": str(newest),
            "csrf_token": live.csrf(browser),
        }
        assert browser.post(f"{PAGE_A}/apply", data=form, follow_redirects=False).status_code == 303
        replay = browser.post(f"{PAGE_A}/apply", data=form, follow_redirects=False)
        assert replay.status_code == 409 and "Nothing was written" in replay.text
        assert browser.get(f"{A}/versions").json()["versions"][0]["version"] == newest + 1
