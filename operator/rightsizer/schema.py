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
