"""The "Pipeline state" plugin in a real api-server with the simple auth manager (three users: an
editor with the OP role, a viewer who may read connections but not edit them -- see
``auth_manager.py`` -- and a user without any role), a scheduler running ``ui_events``, and a headless
Chromium (Debian's) driven by playwright through the Airflow UI.

Screenshots go to ``test-artifacts/ui/`` (git-ignored).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.airflow.conftest import REPO, sqlite_conn_json
from tests.airflow_stack import AirflowStack, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e]

ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
STARTUP_TIMEOUT = 180
RUN_TIMEOUT = 240
USERS = {"editor": "op", "viewer": "viewer", "nobody": ""}
SECRET = "hunter2-do-not-show"
PIPELINE = "/pipeline-state/api/connections/pipeline_state_default/datasets/ui_data/pipelines/ui_events"
PAGE = "/pipeline-state/ui/p/pipeline_state_default/ui_data/ui_events"
CURSOR = "sources.ui_events.resources.events.incremental.updated_at"


def rows(upto: int) -> list[dict]:
    return [{"id": n, "updated_at": f"2024-01-01T{n:02d}:00:00+00:00"} for n in range(1, upto + 1)]


class UIStack:
    """The stack, the rows file the DAG reads, and a token per user."""

    def __init__(self, stack: AirflowStack, rows_file: Path, passwords: dict[str, str]) -> None:
        self.stack, self.rows_file, self.passwords = stack, rows_file, passwords
        self.tokens = {user: stack.token(user, pw) for user, pw in passwords.items()}
        self.run_ids: list[str] = []

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.stack.base_url, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, user: str = "editor", **params: Any) -> Any:
        with self.client(user) as client:
            response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        assert SECRET not in response.text
        return response.json()

    def load(self, upto: int) -> str:
        """One DAG run over rows 1..upto; its run id."""
        self.rows_file.write_text(json.dumps(rows(upto)))
        run_id = self.stack.trigger("ui_events")
        assert self.stack.wait_for_run("ui_events", run_id, RUN_TIMEOUT) == "success"
        self.run_ids.append(run_id)
        return run_id


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, postgres_server) -> Iterator[UIStack]:
    root = tmp_path_factory.mktemp("ui-e2e")
    dags, warehouse, rows_file = root / "dags", root / "warehouse.sqlite", root / "rows.json"
    shutil.copytree(Path(__file__).parent / "dags", dags)
    passwords = {user: f"{user}-pw" for user in USERS}
    (root / "passwords.json").write_text(json.dumps(passwords))
    pg_url = postgres_server if isinstance(postgres_server, str) else postgres_server.url("postgres")
    pg = httpx.URL(pg_url.replace("postgresql+psycopg://", "http://", 1))
    env = {
        "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": sqlite_conn_json(warehouse),
        # a second destination whose password no response may contain
        "AIRFLOW_CONN_PG_WAREHOUSE": json.dumps(
            {
                "conn_type": "postgres",
                "host": pg.host,
                "port": pg.port,
                "login": pg.username or "postgres",
                "password": SECRET,
                "schema": "postgres",
            }
        ),
        "AIRFLOW_STATE_PIPELINES_DIR": str(root / "pipelines"),
        "ASP_UI_ROWS": str(rows_file),
        # a loaded CI machine can take a minute to answer a worker; a retried call then fails the try
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "180",
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.ui.auth_manager.ConnectionViewerAuthManager",
        "PYTHONPATH": str(REPO),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
    }
    stack = AirflowStack(root, dags, f"sqlite:///{warehouse}", env, login=("editor", passwords["editor"]))
    with running_stack(stack, ["ui_events"], STARTUP_TIMEOUT, stop_timeout=30):
        ui = UIStack(stack, rows_file, passwords)
        ui.load(3)  # version 1: rows 1-3
        ui.load(5)  # version 2: rows 4-5
        yield ui


def test_every_endpoint_needs_a_token(ui: UIStack):
    with ui.client() as anonymous:
        for path in ("/pipeline-state/api/pipelines", f"{PIPELINE}/versions", "/pipeline-state/ui/", PAGE):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.post(f"{PIPELINE}/rollback", json={"version": 1}).status_code == 401
    with httpx.Client(base_url=ui.stack.base_url, headers={"Authorization": "Bearer not-a-jwt"}) as forged:
        assert forged.get(f"{PIPELINE}/versions").status_code in (401, 403)


def test_permissions(ui: UIStack):
    with ui.client("nobody") as nobody:
        for path in (f"{PIPELINE}/versions", f"{PIPELINE}/incrementals", PAGE):
            assert nobody.get(path).status_code == 403, path
        # the overview lists only the connections the user may read: none
        assert nobody.get("/pipeline-state/api/pipelines").json() == []
        assert nobody.get("/pipeline-state/api/task-instances", params=_ti(ui, 0)).status_code == 403
    with ui.client("viewer") as viewer:
        assert viewer.get(f"{PIPELINE}/versions").status_code == 200
        for body in ({"version": 1, "dry_run": True}, {"version": 1}):
            assert viewer.post(f"{PIPELINE}/rollback", json=body).status_code == 403
        page = viewer.get(PAGE).text
        assert "editing needs edit permission" in page and 'name="csrf_token"' not in page


def _ti(ui: UIStack, run: int) -> dict:
    return {"dag_id": "ui_events", "run_id": ui.run_ids[run], "task_id": "events"}


def test_editor_sees_pipelines_versions_diff_and_incrementals(ui: UIStack):
    overview = ui.get("/pipeline-state/api/pipelines")
    by_conn = {c["conn_id"]: c for c in overview}
    assert {"pipeline_state_default", "pg_warehouse"} <= set(by_conn)
    assert by_conn["pg_warehouse"]["pipelines"] == [] and "***" in by_conn["pg_warehouse"]["where"]
    (summary,) = by_conn["pipeline_state_default"]["pipelines"]
    assert (summary["pipeline_name"], summary["dataset_name"], summary["version"]) == (
        "ui_events",
        "ui_data",
        2,
    )
    assert summary["newest_load_id"] == summary["version_load_id"] and summary["size"] > 0

    page = ui.get(f"{PIPELINE}/versions")
    assert [v["version"] for v in page["versions"]] == [2, 1] and page["writers_recorded"]
    for version, run_id in zip(page["versions"], reversed(ui.run_ids[:2]), strict=True):
        writer = version["writer"]
        assert (writer["writer"], writer["dag_id"], writer["task_id"]) == ("task", "ui_events", "events")
        ti = ui.stack.get(f"{ui.stack.run_path('ui_events', run_id)}/taskInstances/events")
        assert (writer["run_id"], writer["try_number"]) == (run_id, ti["try_number"])
    assert f"{CURSOR}.last_value" in page["versions"][0]["changed_paths"]
    older = ui.get(f"{PIPELINE}/versions", limit=1, before=page["versions"][0]["load_id"])
    assert [v["version"] for v in older["versions"]] == [1]

    changes = {c["path"]: c for c in ui.get(f"{PIPELINE}/diff", **{"from": 1, "to": 2})["changes"]}
    last = changes[f"{CURSOR}.last_value"]
    assert (last["old"], last["new"]) == ("2024-01-01T03:00:00+00:00", "2024-01-01T05:00:00+00:00")

    (inc,) = ui.get(f"{PIPELINE}/incrementals")["incrementals"]
    assert inc["slot"] == "sources.ui_events.resources.events" and inc["cursor_path"] == "updated_at"
    assert inc["initial_value"] == "2024-01-01T00:00:00+00:00"
    assert (inc["start_value"], inc["last_value"]) == (
        "2024-01-01T03:00:00+00:00",
        "2024-01-01T05:00:00+00:00",
    )
    assert inc["boundary_hashes"] == 1

    (commit,) = ui.get("/pipeline-state/api/task-instances", **_ti(ui, 1))["commits"]
    assert (commit["version"], commit["restored"]["version"]) == (2, 1) and commit["try_number"] >= 1


def test_state_values_are_escaped(ui: UIStack):
    with ui.client("editor") as client:
        page = client.get(f"{PAGE}/version/2")
    html = page.text
    # and nothing could run if a value slipped through: no script, framed only by the Airflow UI
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'self'" in policy
    assert "script-src" not in policy and "<script" not in html.replace("&lt;script", "")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;state&#39;)&lt;/script&gt;" in html


def test_cookie_mutations_need_the_csrf_token(ui: UIStack):
    cookies = {"_token": ui.tokens["editor"]}
    with ui.client(cookies=cookies) as browser:
        page = browser.get(PAGE)
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
        form = {"action": "rollback", "version": "1"}
        assert browser.post(f"{PAGE}/preview", data=form).status_code == 403
        assert browser.post(f"{PAGE}/preview", data={**form, "csrf_token": "0" * 64}).status_code == 403
        assert browser.post(f"{PIPELINE}/rollback", json={"version": 1, "dry_run": True}).status_code == 403
        # what the browser itself says about the request wins, token or not
        for site in ("cross-site", "same-site"):
            forged = browser.post(
                f"{PAGE}/preview", data={**form, "csrf_token": csrf}, headers={"Sec-Fetch-Site": site}
            )
            assert forged.status_code == 403 and site in forged.text
        preview = browser.post(f"{PAGE}/preview", data={**form, "csrf_token": csrf})
        assert preview.status_code == 200 and "Planned against version <b>2</b>" in preview.text
        dry = browser.post(
            f"{PIPELINE}/rollback", json={"version": 1, "dry_run": True}, headers={"X-CSRF-Token": csrf}
        )
        assert dry.status_code == 200 and dry.json()["committed"] is False
    assert [v["version"] for v in ui.get(f"{PIPELINE}/versions")["versions"]] == [2, 1]  # nothing written


def test_edits_work_behind_a_tls_terminating_proxy(ui: UIStack):
    """The api-server runs without --proxy-headers behind a proxy that terminates TLS: it sees
    http://127.0.0.1:port while the browser's page (and Origin) is https://airflow.example.test. The
    page's own same-origin edit goes through; the same request marked cross-site does not."""
    public = "https://airflow.example.test"
    proxied = {"Origin": public, "Referer": f"{public}{PAGE}", "X-Forwarded-Proto": "https"}
    with ui.client(cookies={"_token": ui.tokens["editor"]}) as browser:
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', browser.get(PAGE).text).group(1)
        same = {**proxied, "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf}
        dry = browser.post(f"{PIPELINE}/rollback", json={"version": 1, "dry_run": True}, headers=same)
        assert dry.status_code == 200 and dry.json()["base_version"] == 2
        preview = browser.post(
            f"{PAGE}/preview",
            data={"action": "rollback", "version": "1", "csrf_token": csrf},
            headers={**proxied, "Sec-Fetch-Site": "same-origin"},
        )
        assert preview.status_code == 200 and "Planned against version <b>2</b>" in preview.text
        # an old browser sends no Sec-Fetch-Site: the token alone decides
        assert browser.post(f"{PAGE}/preview", data={"action": "rollback", "version": "1"}).status_code == 403
        forged = {**proxied, "Origin": "https://evil.example.test", "Sec-Fetch-Site": "cross-site"}
        refused = browser.post(
            f"{PIPELINE}/rollback",
            json={"version": 1, "dry_run": True},
            headers={**forged, "X-CSRF-Token": csrf},
        )
        assert refused.status_code == 403
    with ui.client("editor") as api:  # a bearer client: no token, any Origin (as Airflow's own API)
        dry = api.post(
            f"{PIPELINE}/rollback", json={"version": 1, "dry_run": True}, headers={"Origin": public}
        )
        assert dry.status_code == 200
    assert [v["version"] for v in ui.get(f"{PIPELINE}/versions")["versions"]] == [2, 1]  # nothing written


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("rollback", {"version": 1, "dry_run": "false", "expect_version": 2}, "dry_run"),
        ("rollback", {"version": 1, "dry_run": 0, "expect_version": 2}, "dry_run"),
        ("rollback", {"version": 1, "dryrun": True}, "dryrun"),
        ("rollback", {"version": "1", "expect_version": 2}, "version"),
        ("rollback", {"version": 1}, "expect_version"),
        ("rollback", {"version": 1, "expect_version": 2**63}, "expect_version"),
        ("rollback", {"version": -1, "dry_run": True}, "version"),
        ("set", {"path": CURSOR + ".last_value", "value": 5, "dry_run": True}, "value"),
        (
            "set",
            {"path": CURSOR + ".last_value", "value": "1", "value_type": "float", "dry_run": True},
            "value_type",
        ),
        (
            "set",
            {"path": CURSOR + ".last_value", "value": '"x"', "create": "yes", "expect_version": 2},
            "create",
        ),
        ("drop", {"resources": "events", "expect_version": 2}, "resources"),
        ("drop", {"resources": ["events"], "state_only": "true", "expect_version": 2}, "state_only"),
        ("drop", {"resources": ["events"], "state_only": True}, "expect_version"),
    ],
)
def test_edit_bodies_are_validated_before_anything_is_written(ui: UIStack, action, body, field):
    """Wrong types, unknown fields and a commit without ``expect_version`` are a 422 naming the field
    (a string "false" is not False: it used to commit)."""
    with ui.client("editor") as editor:
        response = editor.post(f"{PIPELINE}/{action}", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    named = {str(part) for error in detail for part in error["loc"]} | {
        word for error in detail for word in re.findall(r"[a-z_]+", error["msg"])
    }
    assert field in named, detail
    assert ui.get(f"{PIPELINE}/versions")["versions"][0]["version"] == 2  # nothing written


def test_hostile_requests_get_clear_errors_and_change_nothing(ui: UIStack):
    """Found attacking the plugin: a misspelled dataset created SQLite files on a read, a deeply
    nested value was a 502, out-of-range numbers reached the database."""
    warehouse_dir = Path(ui.stack.warehouse_url.removeprefix("sqlite:///")).parent
    base = "/pipeline-state/api/connections/pipeline_state_default/datasets"
    with ui.client("viewer") as viewer:
        for path in (f"{base}/ui_datx/pipelines/ui_events/versions", f"{base}/x/pipelines/y/incrementals"):
            missing = viewer.get(path)
            assert missing.status_code == 404 and "has no dataset" in missing.json()["detail"], path
        assert viewer.get(PAGE.replace("/ui_data/", "/nope/")).status_code == 404
    created = [p.name for p in warehouse_dir.iterdir() if re.search("__(ui_datx|x|nope)[.]", p.name)]
    assert created == []  # a read creates no dataset file (it did: SQLite's ATTACH creates the file)
    with ui.client("editor") as editor:
        deep = "[" * 100_000 + "]" * 100_000
        body = {
            "path": "sources.ui_events.resources.events.deep",
            "value": deep,
            "create": True,
            "dry_run": True,
        }
        answer = editor.post(f"{PIPELINE}/set", json=body)
        assert answer.status_code == 400 and "nested too deeply" in answer.json()["detail"]
        for path, params in (
            (f"{PIPELINE}/versions/{2**63}", {}),
            (f"{PIPELINE}/versions", {"limit": 501}),
            (f"{PIPELINE}/diff", {"from": -1, "to": 2}),
            ("/pipeline-state/api/task-instances", {**_ti(ui, 0), "map_index": 2**31}),
        ):
            assert editor.get(path, params=params).status_code == 422, (path, params)
        page = editor.get(PAGE, params={"limit": 10**6})
        assert (
            page.status_code == 422
            and "limit" in page.text
            and page.headers["content-type"].startswith("text/html")
        )
    assert ui.get(f"{PIPELINE}/versions")["versions"][0]["version"] == 2


def test_rollback_is_audited_and_the_next_run_continues_from_it(ui: UIStack):
    with ui.client("editor") as editor:
        preview = editor.post(f"{PIPELINE}/rollback", json={"version": 1, "dry_run": True}).json()
        assert preview["committed"] is False and preview["base_version"] == 2
        assert {c["path"] for c in preview["changes"]} >= {f"{CURSOR}.last_value"}
        drop = editor.post(f"{PIPELINE}/drop", json={"resources": ["events"], "dry_run": True}).json()
        assert (drop["committed"], drop["drop_tables"]) == (False, ["events"])
        assert {(c["path"], c["kind"]) for c in drop["changes"]} == {
            ("sources.ui_events.resources.events", "removed")
        }
        value = '"2024-01-01T04:00:00+00:00"'
        set_ = editor.post(
            f"{PIPELINE}/set", json={"path": f"{CURSOR}.last_value", "value": value, "dry_run": True}
        )
        assert [(c["path"], c["new"]) for c in set_.json()["changes"]] == [
            (f"{CURSOR}.last_value", "2024-01-01T04:00:00+00:00")
        ]
        stale = editor.post(f"{PIPELINE}/rollback", json={"version": 1, "expect_version": 1})
        assert stale.status_code == 409
        assert "expected state version 1, but the newest committed version is 2" in stale.json()["detail"]
        assert "Nothing was written" in stale.json()["detail"]
        bad = editor.post(f"{PIPELINE}/rollback", json={"version": 99, "dry_run": True})
        assert bad.status_code == 400 and "not retained" in bad.json()["detail"]
        done = editor.post(f"{PIPELINE}/rollback", json={"version": 1, "expect_version": 2}).json()
        assert (done["committed"], done["version"]) == (True, 3)

    newest = ui.get(f"{PIPELINE}/versions")["versions"][0]
    assert newest["version"] == 3
    writer = newest["writer"]
    assert (writer["writer"], writer["user_name"], writer["action"]) == (
        "ui",
        "editor",
        "rollback to version 1",
    )
    assert f"{CURSOR}.last_value" in writer["detail"]["changed_paths"] and writer["written_at"]
    assert ui.get(f"{PIPELINE}/diff", **{"from": 1, "to": 3})["changes"] == []

    run_id = ui.load(5)  # the same rows: rows 4-5 load again, from the rolled-back cursor
    (inc,) = ui.get(f"{PIPELINE}/incrementals")["incrementals"]
    assert (inc["start_value"], inc["last_value"]) == (
        "2024-01-01T03:00:00+00:00",
        "2024-01-01T05:00:00+00:00",
    )
    (commit,) = ui.get(
        "/pipeline-state/api/task-instances", dag_id="ui_events", run_id=run_id, task_id="events"
    )["commits"]
    assert (commit["version"], commit["restored"]["version"]) == (4, 3)
    assert commit["incrementals"][0]["start_value"] == "2024-01-01T03:00:00+00:00"


def test_chromium_browses_the_state(ui: UIStack):
    """Log in through the UI, open "Pipeline state", a pipeline, a diff and the task-instance tab."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = ui.stack.base_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/", wait_until="networkidle")
            page.locator("input[name=username]").fill("editor")
            page.locator("input[name=password]").fill(ui.passwords["editor"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/).*$"), timeout=60_000)

            page.locator(
                "nav a[href$='/plugin/pipeline-state'], a[href$='/plugin/pipeline-state']"
            ).first.click()
            page.wait_for_url(re.compile("/plugin/pipeline-state"))
            frame = page.frame_locator("iframe[title='Pipeline state']")
            frame.get_by_role("link", name="ui_events").click()
            frame.get_by_role("heading", name="ui_events").wait_for()
            frame.get_by_text("rollback to version 1").wait_for()
            page.screenshot(path=str(ARTIFACTS / "pipeline.png"), full_page=True)

            frame.locator("input[name=from][value='1']").check()
            frame.locator("input[name=to][value='2']").check()
            frame.get_by_role("button", name="Diff selected versions").click()
            frame.get_by_role("heading", name="ui_events: version 1 → 2").wait_for()
            frame.get_by_text(f"{CURSOR}.last_value").wait_for()
            page.screenshot(path=str(ARTIFACTS / "diff.png"), full_page=True)

            run_id = quote(ui.run_ids[-1], safe="")
            page.goto(f"{base}/dags/ui_events/runs/{run_id}/tasks/events/plugin/pipeline-state-ti")
            frame = page.frame_locator("iframe[title='Pipeline state']")
            frame.get_by_text("State written by ui_events.events").wait_for()
            frame.get_by_text("version 3").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "task_instance.png"), full_page=True)

            # an edit through the page's own forms, with the browser's real Origin, Sec-Fetch-Site
            # and cookies, under the pages' Content-Security-Policy
            newest = ui.get(f"{PIPELINE}/versions")["versions"][0]["version"]
            page.goto(f"{base}/plugin/pipeline-state", wait_until="networkidle")
            frame = page.frame_locator("iframe[title='Pipeline state']")
            frame.get_by_role("link", name="ui_events").click()
            form = frame.locator("form", has=frame.locator("legend", has_text="Set a value"))
            form.locator("input[name=path]").fill("sources.ui_events.resources.events.checked_by")
            form.locator("input[name=value]").fill('"chromium"')
            form.locator("input[name=create]").check()
            form.get_by_role("button", name="Preview").click()
            frame.get_by_text(f"Planned against version {newest}").wait_for()
            frame.get_by_role("button", name="Commit this change as a new version").click()
            frame.get_by_text("UI edit by editor: set").first.wait_for()
        finally:
            browser.close()
    latest = ui.get(f"{PIPELINE}/versions")["versions"][0]
    assert (latest["version"], latest["changed_paths"]) == (
        newest + 1,
        ["sources.ui_events.resources.events.checked_by"],
    )
    for name in ("pipeline.png", "diff.png", "task_instance.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000


def test_form_edit_commits_exactly_the_previewed_plan(ui: UIStack):
    """The page's set form: preview, then confirm; a confirm planned against an older version fails."""
    newest = ui.get(f"{PIPELINE}/versions")["versions"][0]["version"]
    note = "sources.ui_events.resources.events.note"
    form = {"action": "set", "path": note, "value": '"<i>checked</i>"', "value_type": "auto"}
    with ui.client(cookies={"_token": ui.tokens["editor"]}) as browser:
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', browser.get(PAGE).text).group(1)
        preview = browser.post(f"{PAGE}/preview", data={**form, "csrf_token": csrf})
        assert preview.status_code == 200 and "&lt;i&gt;checked&lt;/i&gt;" in preview.text
        hidden = re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', preview.text)
        confirm = {name: html.unescape(value) for name, value in hidden}
        assert confirm["expect_version"] == str(newest)
        stale = browser.post(f"{PAGE}/apply", data={**confirm, "expect_version": str(newest - 1)})
        assert stale.status_code == 409 and "Nothing was written" in stale.text
        unguarded = {k: v for k, v in confirm.items() if k != "expect_version"}
        missing = browser.post(f"{PAGE}/apply", data=unguarded)
        assert missing.status_code == 400 and "expect_version is required" in missing.text
        typo = browser.post(f"{PAGE}/apply", data={**confirm, "create": "maybe"})
        assert typo.status_code == 400 and "create:" in typo.text
        done = browser.post(f"{PAGE}/apply", data=confirm, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"].endswith(PAGE)
    latest = ui.get(f"{PIPELINE}/versions")["versions"][0]
    assert latest["version"] == newest + 1
    assert (latest["writer"]["user_name"], latest["writer"]["action"]) == ("editor", "set")
    assert latest["changed_paths"] == [note]
    assert (
        ui.get(f"{PIPELINE}/versions/{newest + 1}")["state"]["sources"]["ui_events"]["resources"]["events"][
            "note"
        ]
        == "<i>checked</i>"
    )
