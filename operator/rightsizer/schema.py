"""The RightsizeJob CRD, read from the file that defines it, so the code never restates the API."""

from __future__ import annotations

import copy
import functools
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

GROUP = "rightsizer.io"
VERSION = "v1alpha1"
PLURAL = "rightsizejobs"
KIND = "RightsizeJob"


_crd_lock = threading.Lock()


@functools.cache
def _load_crd() -> dict[str, Any]:
    return yaml.safe_load(resources.files("rightsizer").joinpath("data/rightsizejobs.yaml").read_text())


def crd() -> dict[str, Any]:
    # Parsed once, also when the first visits arrive on several worker threads at once.
    with _crd_lock:
        return _load_crd()


def rightsize_jobs(text: str) -> list[dict[str, Any]]:
    """The RightsizeJob documents of a (multi-document) YAML text; other kinds are skipped."""
    return [document for document in yaml.safe_load_all(text) if document and document.get("kind") == KIND]


def openapi_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def spec_schema() -> dict[str, Any]:
    return openapi_schema()["properties"]["spec"]


def _apply_defaults(value: Any, node: Mapping[str, Any]) -> Any:
    """Structural-schema defaulting as the API server does it: absent fields with a default get it, recursively."""
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        for name, child in properties.items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply_defaults(value[name], child)
        additional = node.get("additionalProperties")
        if isinstance(additional, dict):
            for name in value.keys() - properties.keys():
                value[name] = _apply_defaults(value[name], additional)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_apply_defaults(item, node["items"]) for item in value]
    return value


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with the CRD's defaults filled in (the API server has done this for stored objects)."""
    return _apply_defaults(copy.deepcopy(dict(spec)), spec_schema())


class ManifestError(ValueError):
    """A manifest file the tools cannot read as RightsizeJobs; the message is one line naming the file."""


def read_jobs(path: str | Path) -> list[dict[str, Any]]:
    """The RightsizeJobs of a manifest file, each with a mapping `spec` and `metadata` (null read as absent).
    Raises ManifestError for what a person must fix: no such file, a directory, YAML that does not parse, a job
    whose spec or metadata is not a mapping, no RightsizeJob at all."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ManifestError(f"{path}: cannot read it: {reason}") from error
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ManifestError(f"{path}: not valid YAML{where}: {problem}") from error
    jobs = []
    for number, document in enumerate(documents, 1):
        if not isinstance(document, dict) or document.get("kind") != KIND:
            continue  # other kinds (a kustomization, a namespace) and empty documents are not ours
        metadata = document.get("metadata")
        if metadata is None:
            metadata = document["metadata"] = {}
        name = metadata.get("name", f"document {number}") if isinstance(metadata, dict) else f"document {number}"
        for field, value in (("metadata", metadata), ("spec", document.get("spec"))):
            if not isinstance(value, dict):
                raise ManifestError(f"{path}: {name}: {field} must be a mapping, not {_yaml_type(value)}")
        jobs.append(document)
    if not jobs:
        raise ManifestError(f"{path}: no {KIND} in it (kind: {KIND}, apiVersion: {GROUP}/{VERSION})")
    return jobs


def _yaml_type(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list"}.get(type(value), type(value).__name__)


@functools.cache
def _spec_validator() -> Any:
    import jsonschema
    import regex

    def pattern(validator: Any, expected: str, instance: Any, schema: Any) -> Any:
        # The API server's patterns are RE2 (\p{L} and friends), which the re module cannot compile.
        if isinstance(instance, str) and not regex.search(expected, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match the pattern {expected}")

    # The CRD's structural schema as JSON Schema: what the API server checks before any controller sees the object
    # (its x-kubernetes-* extensions and CEL rules are not JSON Schema and are left to the API server).
    checker = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": pattern})
    return checker(_closed(spec_schema()))


def _closed(node: Any) -> Any:
    """Unknown fields refused, as kubectl's default strict field validation refuses them (the API server would
    otherwise drop them silently): every object with declared properties admits no others."""
    if isinstance(node, list):
        return [_closed(value) for value in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _closed(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        closed["additionalProperties"] = False
    return closed


def spec_violations(raw_spec: Any) -> list[str]:
    """Where `raw_spec` breaks the CRD's structural schema, each naming its field (`spec.instanceTypes: ...`):
    what a tool without an API server (rightsizer validate, render, run) must refuse before reading it."""
    errors = sorted(_spec_validator().iter_errors(raw_spec), key=lambda error: list(map(str, error.absolute_path)))
    return [f"spec{''.join(f'[{part}]' if isinstance(part, int) else f'.{part}' for part in error.absolute_path)}: "
            f"{error.message}" for error in errors]
