"""The RightsizeJob CRD, read from the file that defines it, so the code never restates the API."""

from __future__ import annotations

import copy
import functools
import threading
from importlib import resources
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
