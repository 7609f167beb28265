"""Request bodies of the plugin's edits (rollback, set, drop), validated by pydantic as FastAPI does.

The JSON API validates strictly: ``{"dry_run": "false"}`` is a 422 naming ``dry_run``, not a commit,
and an unknown field (``"dryrun": true``) is a 422 too, so a typo never turns a preview into a write.
The HTML forms send text, so :func:`from_form` validates the same models leniently (a checkbox's
``"1"`` is ``True``); a malformed number or flag is still an error naming the field.

A commit (``dry_run`` false) must name the version it was planned against in ``expect_version`` (the
preview's ``base_version``): when another writer committed since, nothing is written and the answer
is a 409 naming both versions.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airflow_state_provider.cli import ValueType
from airflow_state_provider.exceptions import FormError

#: versions are BIGINT in the state table
Version = Annotated[int, Field(ge=0, le=2**63 - 1)]


class EditBody(BaseModel):
    """Fields every edit has."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dry_run: bool = Field(False, description="preview the change only; nothing is written")
    expect_version: Version | None = Field(
        None,
        description="the version the change was planned against (the preview's base_version); "
        "required to commit",
    )

    @model_validator(mode="after")
    def _commit_names_its_base(self) -> EditBody:
        if not self.dry_run and self.expect_version is None:
            raise ValueError(
                "expect_version is required to commit: pass the base_version of the preview "
                '({"dry_run": true, ...}) the change was reviewed against'
            )
        return self


class RollbackBody(EditBody):
    version: Version = Field(description="the retained version to restore")


class SetBody(EditBody):
    path: str = Field(min_length=1, description="dotted state path, e.g. sources.s.resources.r.x")
    value: str = Field(description="the new value as JSON text (a bare word is a string)")
    value_type: ValueType = Field("auto", description="coerce the value to this type")  # type: ignore[valid-type]
    create: bool = Field(False, description="create the path's missing keys")


class DropBody(EditBody):
    resources: list[str] = Field(default_factory=list, description="resource names or re: patterns")
    state_paths: list[str] = Field(default_factory=list, description="source-level state keys")
    state_only: bool = Field(False, description="keep the resources' tables")


BODIES: dict[str, type[EditBody]] = {"rollback": RollbackBody, "set": SetBody, "drop": DropBody}

#: the form fields an action's confirm page carries over from its preview
FORM_FIELDS = {name: tuple(model.model_fields) for name, model in BODIES.items()}
_LIST_FIELDS = ("resources", "state_paths")


def from_form(form: dict[str, str], *, dry_run: bool) -> EditBody:
    """The edit a submitted HTML form asks for. Raises :class:`FormError` naming each bad field."""
    action = form.get("action", "")
    model = BODIES.get(action)
    if model is None:
        raise FormError([f"action: unknown action {action!r}; use one of {', '.join(BODIES)}"])
    data: dict[str, Any] = {k: v for k, v in form.items() if k in model.model_fields and v != ""}
    for name in _LIST_FIELDS:
        if name in data:
            data[name] = [v.strip() for v in data[name].replace("\n", ",").split(",") if v.strip()]
    data["dry_run"] = dry_run
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as exc:
        raise FormError(error_lines(exc)) from None


def error_lines(exc: ValidationError) -> list[str]:
    """``field: message`` per error of a validation."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return lines
