# ruff: noqa: E501 -- HTML template lines
"""The plugin's HTML pages: Jinja2 templates with autoescaping, styles inline, no scripts and no assets
fetched from anywhere (the pages render in the Airflow UI's iframe, also offline)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}Pipeline state{% endblock %}</title>
<style>
:root { color-scheme: light dark; --fg:#1a202c; --muted:#5a6577; --line:#d9dee7; --bg:#ffffff;
  --head:#f4f6f9; --accent:#0b6bcb; --add:#e6f6ea; --del:#fdecec; --chg:#fff6dc; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e9ef; --muted:#9aa4b5; --line:#333b48;
  --bg:#15181d; --head:#1e232b; --accent:#5aa9ff; --add:#16351f; --del:#3d1c1c; --chg:#3a3216; } }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 16px 20px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.crumbs { color: var(--muted); margin-bottom: 12px; } .muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--head); padding: 10px; overflow: auto; border-radius: 6px; }
td code { word-break: break-all; }
.added { background: var(--add); } .removed { background: var(--del); } .changed { background: var(--chg); }
.nowrap { white-space: nowrap; } .error { color: #c53030; } .badge { border: 1px solid var(--line); border-radius: 10px; padding: 0 7px;
  font-size: 12px; white-space: nowrap; }
form.inline { display: inline; } fieldset { border: 1px solid var(--line); border-radius: 6px;
  margin: 8px 0; padding: 8px 12px; } legend { font-weight: 600; }
input[type=text], input[type=number], select { padding: 3px 6px; min-width: 14em; }
button { padding: 4px 12px; cursor: pointer; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 10px; }
</style></head>
<body>
<div class="crumbs"><a href="{{ root }}/ui/">Pipeline state</a>{% block crumbs %}{% endblock %}</div>
{% block body %}{% endblock %}
</body></html>
"""

_WRITER = """{% macro writer(w) -%}
{%- if not w -%}<span class="muted">not recorded</span>
{%- elif w.writer == "task" -%}task <code>{{ w.dag_id }}.{{ w.task_id }}</code>
{%- if w.map_index is not none and w.map_index >= 0 %} [{{ w.map_index }}]{% endif %}
 try {{ w.try_number }}<br><span class="muted">{{ w.run_id }}</span>
{%- elif w.writer == "ui" -%}UI edit by <b>{{ w.user_name }}</b>{% if w.action %}: {{ w.action }}{% endif %}
{%- else -%}{{ w.writer | upper }}{% if w.user_name %} by <b>{{ w.user_name }}</b>{% endif %}
{%- if w.action %}: {{ w.action }}{% endif %}
{%- endif -%}
{%- endmacro %}"""

_INDEX = """{% extends "base" %}
{% block body %}
<h1>Pipeline state</h1>
<p class="muted">Pipelines with committed state in the connections you may read.</p>
{% for c in connections %}
<h2>{{ c.conn_id }} <span class="badge">{{ c.conn_type }}</span> <span class="muted">{{ c.where }}</span></h2>
{% if c.error %}<p class="error">{{ c.error }}</p>
{% elif not c.pipelines %}<p class="muted">No pipeline state here yet.</p>
{% else %}
<table><thead><tr><th>Pipeline</th><th>Dataset</th><th>Version</th><th>Committed at</th><th>Size</th>
<th>Newest load</th></tr></thead><tbody>
{% for p in c.pipelines %}<tr>
<td><a href="{{ p.href }}">{{ p.pipeline_name }}</a></td><td>{{ p.dataset_name }}</td>
<td>{{ p.version if p.version is not none else "—" }}</td><td class="nowrap">{{ p.created_at | when or "—" }}</td>
<td>{{ p.size if p.size is not none else "—" }} B</td>
<td><code>{{ p.newest_load_id or "—" }}</code><br><span class="muted">{{ p.newest_load_at | when }}</span></td>
</tr>{% endfor %}</tbody></table>
{% endif %}
{% else %}<p class="muted">No connection of type pipeline_state, postgres, sqlite or duckdb that you may read.</p>
{% endfor %}
{% endblock %}"""

_INCREMENTALS = """{% macro incrementals_table(rows) %}
{% if rows %}<table><thead><tr><th>Slot</th><th>Cursor path</th><th>Initial value</th><th>Start value</th>
<th>Last value</th><th>Boundary hashes</th></tr></thead><tbody>
{% for i in rows %}<tr><td><code>{{ i.slot }}</code></td><td><code>{{ i.cursor_path }}</code></td>
<td><code>{{ i.initial_value | j }}</code></td><td><code>{{ i.start_value | j }}</code></td>
<td><code>{{ i.last_value | j }}</code></td><td>{{ i.boundary_hashes }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="muted">No incremental cursors in this version.</p>{% endif %}
{% endmacro %}"""

_PIPELINE = """{% extends "base" %}{% import "writer" as w %}{% import "incrementals" as inc %}
{% block title %}{{ p.pipeline_name }} · Pipeline state{% endblock %}
{% block crumbs %} / {{ conn_id }} / {{ p.dataset_name }} / <b>{{ p.pipeline_name }}</b>{% endblock %}
{% block body %}
<h1>{{ p.pipeline_name }}</h1>
<p class="muted">{{ where }} · newest version
<b>{{ newest.version }}</b> (load <code>{{ newest.load_id }}</code>, {{ newest.size }} B) ·
<a href="{{ base }}/version/{{ newest.version }}">document</a></p>
<h2>Incrementals (version {{ newest.version }})</h2>
{{ inc.incrementals_table(incrementals) }}
<h2>History</h2>
<form method="get" action="{{ base }}/diff">
<table><thead><tr><th>From</th><th>To</th><th>Version</th><th>Load id</th><th>Committed at</th><th>Size</th>
<th>Changed paths</th><th>Written by</th></tr></thead><tbody>
{% for v in page.versions %}<tr>
<td><input type="radio" name="from" value="{{ v.version }}" {% if loop.index == 2 %}checked{% endif %}></td>
<td><input type="radio" name="to" value="{{ v.version }}" {% if loop.first %}checked{% endif %}></td>
<td><a href="{{ base }}/version/{{ v.version }}">{{ v.version }}</a></td><td class="nowrap"><code>{{ v.load_id }}</code></td>
<td class="nowrap">{{ v.created_at | when }}</td><td class="nowrap">{{ v.size }} B</td>
<td>{% if v.error %}<span class="error">{{ v.error }}</span>{% elif v.changed_paths is none %}<span class="muted">(oldest retained)</span>
{% else %}{% for c in v.changed_paths[:8] %}<code>{{ c }}</code><br>{% endfor %}
{% if v.changed_paths | length > 8 %}<span class="muted">… {{ v.changed_paths | length - 8 }} more</span>{% endif %}{% endif %}</td>
<td>{{ w.writer(v.writer) }}</td></tr>{% endfor %}
</tbody></table>
<button type="submit">Diff selected versions</button>
{% if page.next_before %} · <a href="{{ base }}?before={{ page.next_before | urlencode }}&amp;limit={{ page.limit }}">Older versions →</a>{% endif %}
{% if before %} · <a href="{{ base }}">Newest</a>{% endif %}
</form>
{% if not page.audited %}<p class="muted">This dataset has no {{ audit_table }} table: writers are recorded
from the next commit made by this provider.</p>{% endif %}
<h2>Actions</h2>
{% if can_edit %}
<p class="muted">Each action shows a preview first; nothing is written until you confirm it.</p>
<div class="grid">
<form method="post" action="{{ base }}/preview"><fieldset><legend>Roll back</legend>
<input type="hidden" name="csrf_token" value="{{ csrf }}"><input type="hidden" name="action" value="rollback">
<label>to version <input type="number" name="version" min="0" required></label>
<button type="submit">Preview</button></fieldset></form>
<form method="post" action="{{ base }}/preview"><fieldset><legend>Set a value</legend>
<input type="hidden" name="csrf_token" value="{{ csrf }}"><input type="hidden" name="action" value="set">
<label>path <input type="text" name="path" required placeholder="sources.s.resources.r.incremental.updated_at.last_value"></label><br>
<label>value (JSON) <input type="text" name="value" required></label>
<select name="value_type">{% for t in value_types %}<option>{{ t }}</option>{% endfor %}</select>
<label><input type="checkbox" name="create" value="1"> create</label>
<button type="submit">Preview</button></fieldset></form>
<form method="post" action="{{ base }}/preview"><fieldset><legend>Drop</legend>
<input type="hidden" name="csrf_token" value="{{ csrf }}"><input type="hidden" name="action" value="drop">
<label>resources <input type="text" name="resources" placeholder="events, re:^tmp_"></label><br>
<label>state paths <input type="text" name="state_paths" placeholder="last_sync"></label>
<label><input type="checkbox" name="state_only" value="1" checked> state only (keep tables)</label>
<button type="submit">Preview</button></fieldset></form>
</div>
{% else %}<p class="muted">You may read this state; editing needs edit permission on connection {{ conn_id }}.</p>{% endif %}
{% endblock %}"""

_CHANGES = """{% macro changes_table(changes) %}
{% if changes %}<table><thead><tr><th>Path</th><th>Change</th><th>Old</th><th>New</th></tr></thead><tbody>
{% for c in changes %}<tr class="{{ c.kind }}"><td><code>{{ c.path }}</code></td><td>{{ c.kind }}</td>
<td>{% if c.kind != "added" %}<code>{{ c.old | j }}</code>{% endif %}</td>
<td>{% if c.kind != "removed" %}<code>{{ c.new | j }}</code>{% endif %}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="muted">No differences.</p>{% endif %}
{% endmacro %}"""

_DIFF = """{% extends "base" %}{% import "changes" as ch %}
{% block title %}Diff {{ old }}..{{ new }} · {{ pipeline_name }}{% endblock %}
{% block crumbs %} / {{ conn_id }} / {{ dataset }} / <a href="{{ base }}">{{ pipeline_name }}</a> / diff{% endblock %}
{% block body %}
<h1>{{ pipeline_name }}: version {{ old }} → {{ new }}</h1>
<p class="muted">{{ changes | length }} changed path(s); version bookkeeping keys are not compared.</p>
{{ ch.changes_table(changes) }}
{% endblock %}"""

_VERSION = """{% extends "base" %}{% import "incrementals" as inc %}
{% block title %}Version {{ stored.version }} · {{ pipeline_name }}{% endblock %}
{% block crumbs %} / {{ conn_id }} / {{ dataset }} / <a href="{{ base }}">{{ pipeline_name }}</a> / version {{ stored.version }}{% endblock %}
{% block body %}
<h1>{{ pipeline_name }}: version {{ stored.version }}</h1>
<p class="muted">load <code>{{ stored.load_id }}</code> · {{ stored.created_at }} · {{ stored.size }} B</p>
<h2>Incrementals</h2>{{ inc.incrementals_table(incrementals) }}
<h2>Document</h2><pre>{{ document }}</pre>
{% endblock %}"""

_PREVIEW = """{% extends "base" %}{% import "changes" as ch %}
{% block title %}Preview · {{ pipeline_name }}{% endblock %}
{% block crumbs %} / {{ conn_id }} / {{ dataset }} / <a href="{{ base }}">{{ pipeline_name }}</a> / preview{% endblock %}
{% block body %}
<h1>Preview: {{ plan.action }}</h1>
<p class="muted">Planned against version <b>{{ plan.base_version }}</b>. Nothing has been written.</p>
{% for w in plan.warnings %}<p class="error">{{ w }}</p>{% endfor %}
{{ ch.changes_table(plan.changes) }}
{% if plan.drop_tables %}<p>Tables dropped: {% for t in plan.drop_tables %}<code>{{ t }}</code> {% endfor %}</p>{% endif %}
{% if plan.empty %}<p>This would change nothing. <a href="{{ base }}">Back</a></p>
{% else %}
<form method="post" action="{{ base }}/apply">
<input type="hidden" name="csrf_token" value="{{ csrf }}">
<input type="hidden" name="expect_version" value="{{ plan.base_version }}">
{% for k, v in params.items() %}<input type="hidden" name="{{ k }}" value="{{ v }}">{% endfor %}
<button type="submit">Commit this change as a new version</button> <a href="{{ base }}">Cancel</a>
</form>{% endif %}
{% endblock %}"""

_TI = """{% extends "base" %}{% import "incrementals" as inc %}
{% block title %}Task instance · Pipeline state{% endblock %}
{% block crumbs %} / task <code>{{ dag_id }}.{{ task_id }}</code>{% endblock %}
{% block body %}
<h1>State written by {{ dag_id }}.{{ task_id }}{% if map_index is not none and map_index >= 0 %} [{{ map_index }}]{% endif %}</h1>
<p class="muted">run {{ run_id }}</p>
{% for e in errors %}<p class="error">{{ e }}</p>{% endfor %}
{% for c in commits %}
<h2>Try {{ c.try_number }}{% if c.map_index is not none and c.map_index >= 0 %}, map index {{ c.map_index }}{% endif %}:
<a href="{{ c.href }}">{{ c.pipeline_name }}</a> version {{ c.version }}</h2>
<table><tbody>
<tr><th>Restored</th><td>{% if c.restored %}version {{ c.restored.version }} (load <code>{{ c.restored.load_id }}</code>){% else %}nothing: first run{% endif %}</td></tr>
<tr><th>Committed</th><td>version {{ c.version }} with load <code>{{ c.load_id }}</code> at {{ c.written_at | when }} ·
{% if c.restored %}<a href="{{ c.href }}/diff?from={{ c.restored.version }}&amp;to={{ c.version }}">diff</a>{% endif %}
in {{ c.conn_id }} / {{ c.dataset_name }}</td></tr>
<tr><th>Changed paths</th><td>{% if c.error %}<span class="error">{{ c.error }}</span>{% endif %}
{% for p in c.changed_paths or [] %}<code>{{ p }}</code><br>{% endfor %}</td></tr>
</tbody></table>
<h3>Bound and committed incrementals</h3>
{{ inc.incrementals_table(c.incrementals) }}
{% else %}<p class="muted">No state version was committed by this task instance{% if not errors %} (a try that
failed or loaded nothing new commits no version){% endif %}.</p>
{% endfor %}
{% endblock %}"""

_ERROR = """{% extends "base" %}{% block body %}<h1>{{ title }}</h1><p class="error">{{ message }}</p>
{% if back %}<p><a href="{{ back }}">Back</a></p>{% endif %}{% endblock %}"""


def _when(value: str | None) -> str:
    """An ISO timestamp to the second, UTC shown as ``Z`` (the full value is in the API)."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    text = parsed.replace(microsecond=0).isoformat(sep=" ")
    return text.removesuffix("+00:00") + (" UTC" if text.endswith("+00:00") else "")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


ENV = Environment(
    loader=DictLoader(
        {
            "base": _BASE,
            "writer": _WRITER,
            "incrementals": _INCREMENTALS,
            "changes": _CHANGES,
            "index": _INDEX,
            "pipeline": _PIPELINE,
            "diff": _DIFF,
            "version": _VERSION,
            "preview": _PREVIEW,
            "ti": _TI,
            "error": _ERROR,
        }
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
ENV.filters["j"] = _json
ENV.filters["when"] = _when


def render(name: str, **context: Any) -> str:
    return ENV.get_template(name).render(**context)
