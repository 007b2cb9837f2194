"""The template library: ready-made workflows shipped as YAML files in the package.

Each file under ``atrium/workflows/templates/`` has two sections: ``template`` (id, title,
description, category, parameters, and an optional suggested schedule) and ``workflow``
(a definition, as ``POST /v1/workflows`` takes it, without a name). Parameters fill
``${name}`` placeholders in the definition's string values (never in keys) before it is
validated. A string that is exactly one placeholder takes the parameter's value as it is
(``top_k: "${top_k}"`` becomes the integer); elsewhere the value is written into the text.

Substitution works on the parsed definition, one placeholder at a time, and never looks
at what it inserted: a parameter value cannot add YAML, further placeholders, or (since
values with template delimiters are refused) Jinja code to a prompt.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store.workflows import WorkflowRecord
from atrium.workflows.dsl import IDENT
from atrium.workflows.service import WorkflowService
from atrium.workflows.triggers import ScheduleTrigger, TriggerService

PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TEMPLATE_DELIMITERS: Final = ("{{", "{%", "{#")
_FRAME_BLOCKS: Final = frozenset({"start", "end"})
Category = Literal["trading", "risk", "research", "operations"]
ParameterValue = str | int | float | bool | list[str | int | float | bool]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateParameter(_Strict):
    """A value the template needs; without a default, instantiating must give one."""

    description: str = ""
    default: ParameterValue | None = None

    @property
    def required(self) -> bool:
        """Whether a value must be given when instantiating."""
        return self.default is None


class SuggestedSchedule(_Strict):
    """The cron schedule a template suggests (created when instantiating with schedule)."""

    cron: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)

    def as_trigger(self) -> dict[str, Any]:
        """The body of a schedule trigger (validated: a bad cron fails loading)."""
        spec = ScheduleTrigger(cron=self.cron, timezone=self.timezone, inputs=self.inputs)
        return spec.model_dump(mode="json")


class TemplateMeta(_Strict):
    """The ``template`` section of a template file."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1)
    category: Category
    parameters: dict[str, TemplateParameter] = Field(default_factory=dict)
    schedule: SuggestedSchedule | None = None

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, TemplateParameter]) -> dict[str, TemplateParameter]:
        bad = [name for name in value if not re.fullmatch(IDENT, name)]
        if bad:
            msg = f"parameter names must be identifiers: {bad}"
            raise ValueError(msg)
        return value


@dataclass(frozen=True, slots=True)
class WorkflowTemplate:
    """One template: its metadata and its (unparameterised) workflow definition."""

    meta: TemplateMeta
    workflow: dict[str, Any]

    @property
    def id(self) -> str:
        """The template's id (its file name without ``.yaml``)."""
        return self.meta.id

    def summary(self) -> dict[str, Any]:
        """The template as the catalogue lists it."""
        return {
            "id": self.meta.id,
            "object": "workflow.template",
            "title": self.meta.title,
            "description": self.meta.description,
            "category": self.meta.category,
            "blocks": self.blocks(),
            "parameters": {
                name: {
                    "description": p.description,
                    "default": p.default,
                    "required": p.required,
                }
                for name, p in self.meta.parameters.items()
            },
            "schedule": (
                self.meta.schedule.model_dump(mode="json") if self.meta.schedule else None
            ),
        }

    def detail(self) -> dict[str, Any]:
        """The summary with the definition, placeholders as written."""
        return {**self.summary(), "definition": copy.deepcopy(self.workflow)}

    def blocks(self) -> list[str]:
        """The block types the workflow uses, in order of first use, without the start and
        end every workflow has (what a gallery card shows)."""
        types = (str(node.get("type", "")) for node in self.workflow.get("nodes", []))
        return list(dict.fromkeys(t for t in types if t and t not in _FRAME_BLOCKS))

    def placeholders(self) -> set[str]:
        """Every parameter name the definition mentions."""
        return {m for text in _strings(self.workflow) for m in PLACEHOLDER.findall(text)}

    def instantiate(self, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """The definition named ``name`` with the parameters filled in (not yet validated)."""
        values = self._values(parameters)
        definition = _substitute(copy.deepcopy(self.workflow), values)
        tags = [*definition.get("tags", []), f"template:{self.id}"]
        return {**definition, "name": name, "tags": tags}

    def _values(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.meta.parameters
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            msg = f"unknown parameter {unknown[0]!r} for template {self.id!r} (parameters: {known})"
            raise InvalidRequestError(msg, param=f"parameters.{unknown[0]}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            value = given.get(name, spec.default)
            if value is None:
                msg = f"template {self.id!r} needs parameter {name!r}: {spec.description}"
                raise InvalidRequestError(msg, param=f"parameters.{name}")
            _check_value(name, value)
            values[name] = value
        return values


def _check_value(name: str, value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str | int | float | bool):
            msg = f"parameter {name!r} must be a string, a number, a boolean or a list of them"
            raise InvalidRequestError(msg, param=f"parameters.{name}")
        if isinstance(item, str) and any(d in item for d in _TEMPLATE_DELIMITERS):
            msg = f"parameter {name!r} may not contain template delimiters ({{{{, {{%, {{#)"
            raise InvalidRequestError(msg, param=f"parameters.{name}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _substitute(value: Any, values: dict[str, Any]) -> Any:
    """Placeholders in string values replaced (keys are left as written)."""
    if isinstance(value, list):
        return [_substitute(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, values) for key, item in value.items()}
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value)
    if whole is not None:
        return values[whole.group(1)]
    return PLACEHOLDER.sub(lambda match: _as_text(match.group(1), values), value)


def _as_text(name: str, values: dict[str, Any]) -> str:
    value = values[name]
    if isinstance(value, list):
        msg = f"parameter {name!r} is a list, but the template writes it into a text"
        raise InvalidRequestError(msg, param=f"parameters.{name}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- loading ----------------------------------------------------------------------------


class TemplateFileError(ValueError):
    """A template file is malformed (a packaging bug: raised when the library loads)."""


def parse_template(text: str, source: str) -> WorkflowTemplate:
    """A template from a file's YAML text; TemplateFileError naming ``source`` otherwise."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateFileError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"template", "workflow"}:
        msg = f"{source}: a template file has exactly two sections, template and workflow"
        raise TemplateFileError(msg)
    try:
        meta = TemplateMeta.model_validate(data["template"])
        if meta.schedule is not None:
            meta.schedule.as_trigger()
    except ValidationError as exc:
        raise TemplateFileError(f"{source}: {exc}") from None
    workflow = data["workflow"]
    if not isinstance(workflow, dict) or "name" in workflow:
        msg = f"{source}: workflow must be a definition without a name (given when instantiated)"
        raise TemplateFileError(msg)
    template = WorkflowTemplate(meta, workflow)
    _check_placeholders(template, source)
    return template


def _check_placeholders(template: WorkflowTemplate, source: str) -> None:
    used, declared = template.placeholders(), set(template.meta.parameters)
    if used - declared:
        raise TemplateFileError(f"{source}: undeclared parameters {sorted(used - declared)}")
    if declared - used:
        raise TemplateFileError(f"{source}: parameters never used {sorted(declared - used)}")


class TemplateLibrary:
    """Templates by id; the bundled ones come from :meth:`bundled`."""

    def __init__(self, templates: list[WorkflowTemplate]) -> None:
        self._templates: dict[str, WorkflowTemplate] = {}
        for template in templates:
            if template.id in self._templates:
                msg = f"template {template.id!r} defined twice"
                raise TemplateFileError(msg)
            self._templates[template.id] = template

    @classmethod
    def bundled(cls) -> TemplateLibrary:
        """The templates shipped in the package (loaded once per process)."""
        return _bundled()

    def list(self) -> list[WorkflowTemplate]:
        """Every template, by category then id."""
        return sorted(self._templates.values(), key=lambda t: (t.meta.category, t.id))

    def get(self, template_id: str) -> WorkflowTemplate:
        """A template by id; NotFoundError naming it otherwise."""
        template = self._templates.get(template_id)
        if template is None:
            msg = f"no workflow template {template_id!r}"
            raise NotFoundError(msg)
        return template

    def instantiate(
        self, template_id: str, name: str, parameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The definition of a new workflow ``name`` from a template (validated on save)."""
        return self.get(template_id).instantiate(name, parameters or {})


def _template_files() -> list[Traversable]:
    folder = resources.files("atrium.workflows").joinpath("templates")
    return sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".yaml")),
        key=lambda entry: entry.name,
    )


@lru_cache(maxsize=1)
def _bundled() -> TemplateLibrary:
    templates = []
    for entry in _template_files():
        template = parse_template(entry.read_text(encoding="utf-8"), entry.name)
        if f"{template.id}.yaml" != entry.name:
            msg = f"{entry.name}: the template's id is {template.id!r}; name the file after it"
            raise TemplateFileError(msg)
        templates.append(template)
    return TemplateLibrary(templates)


# -- creating workflows from templates --------------------------------------------------


class TemplateInstantiate(_Strict):
    """Body of ``POST /v1/workflows/templates/{id}/instantiate``."""

    name: str = Field(description="The new workflow's name.")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    publish: bool = Field(False, description="Publish the first version at once.")
    schedule: bool = Field(
        False,
        description="Also create the template's suggested schedule trigger (publishes too).",
    )
    note: str = Field("", max_length=2000, description="The published version's note.")


class TemplateInstaller:
    """Creates workflows from templates: save, then publish and schedule when asked."""

    def __init__(
        self, library: TemplateLibrary, workflows: WorkflowService, triggers: TriggerService
    ) -> None:
        self._library = library
        self._workflows = workflows
        self._triggers = triggers

    @property
    def library(self) -> TemplateLibrary:
        """The templates this installer offers."""
        return self._library

    async def install(
        self, template_id: str, request: TemplateInstantiate, *, key_id: str
    ) -> WorkflowRecord:
        """Create the workflow; every check runs before anything is saved."""
        template = self._library.get(template_id)
        definition = template.instantiate(request.name, request.parameters)
        self._workflows.validate(definition)
        if request.schedule and template.meta.schedule is None:
            msg = f"template {template_id!r} suggests no schedule"
            raise InvalidRequestError(msg, param="schedule")
        record = await self._workflows.create(definition, created_by=key_id)
        if request.publish or request.schedule:
            note = request.note or f"from template {template_id}"
            await self._workflows.publish(record.name, note=note, created_by=key_id)
        if request.schedule:
            assert template.meta.schedule is not None
            await self._triggers.create(record.name, template.meta.schedule.as_trigger(), key_id)
        return await self._workflows.get(record.name)


__all__ = [
    "TemplateFileError",
    "TemplateInstaller",
    "TemplateInstantiate",
    "TemplateLibrary",
    "TemplateMeta",
    "TemplateParameter",
    "WorkflowTemplate",
    "parse_template",
]
