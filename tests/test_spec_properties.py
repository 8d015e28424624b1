"""Generated bad input (#16 item 6): specs drawn from the CRD's own schema, and arbitrary JSON, through what a
file-reading tool does (registry.validate_file, then the backend's request). Nothing crashes, and every refusal
names a field of the spec."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as strategies
from hypothesis_jsonschema import from_schema

from conftest import SAMPLES
from rightsizer import schema
from rightsizer import spec as spec_module
from rightsizer.backends import registry
from rightsizer.backends.sagemaker import translate
from rightsizer.model import Owner

OWNER = Owner("ml", "fraud", "3b9f0c55-2d7e-4c51-8a3e-1f2e3d4c5b6a")


def without_extensions(node):
    """The spec schema as plain JSON Schema: x-kubernetes-* are the API server's (CEL rules among them)."""
    if isinstance(node, dict):
        return {key: without_extensions(value) for key, value in node.items() if not key.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [without_extensions(value) for value in node]
    return node


# The RE2 patterns the CRD uses (\p{L}) are not Python's: generated strings skip patterns, and the validator under
# test (which uses the regex module) still judges them.
def without_patterns(node):
    if isinstance(node, dict):
        return {key: without_patterns(value) for key, value in node.items() if key != "pattern"}
    if isinstance(node, list):
        return [without_patterns(value) for value in node]
    return node


SPEC_SCHEMA = without_patterns(without_extensions(copy.deepcopy(schema.spec_schema())))
JSON = strategies.recursive(
    strategies.none() | strategies.booleans() | strategies.integers() | strategies.floats(allow_nan=False)
    | strategies.text(max_size=8),
    lambda children: strategies.lists(children, max_size=3) | strategies.dictionaries(
        strategies.sampled_from(sorted(schema.spec_schema()["properties"])) | strategies.text(max_size=6),
        children, max_size=4),
    max_leaves=12)


def read_as_a_tool_does(raw) -> None:
    """validate_file, then the SageMaker request for a SageMaker spec: either works, or refuses naming fields."""
    try:
        validated = registry.validate_file(raw)
    except spec_module.InvalidSpec as invalid:
        assert invalid.errors and all(error.startswith("spec") for error in invalid.errors), invalid.errors
        return
    if validated.spec.backend == "sagemaker":
        try:
            translate.build_request(validated.spec, OWNER, 1)
        except translate.RequestInvalid as invalid:
            assert all(str(error) for error in invalid.errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.filter_too_much])
@given(from_schema(SPEC_SCHEMA))
def test_specs_the_schema_admits_never_crash_the_tools(raw):
    read_as_a_tool_does(raw)


@settings(max_examples=300, deadline=None)
@given(strategies.dictionaries(strategies.sampled_from(sorted(schema.spec_schema()["properties"])), JSON, max_size=6))
def test_arbitrary_json_is_refused_naming_a_field_never_a_crash(raw):
    read_as_a_tool_does(raw)


@settings(max_examples=100, deadline=None)
@given(from_schema(SPEC_SCHEMA))
def test_what_the_structural_check_admits_the_parser_reads(raw):
    # The schema check and the parser agree: a spec without structural violations parses, or is refused only by
    # one of the CRD's CEL rules (which the structural check does not run), naming its field: never a crash.
    if not schema.spec_violations(raw):
        try:
            spec_module.parse(raw, check=False)
        except spec_module.InvalidSpec as invalid:
            assert invalid.errors and all(error.startswith("spec.") for error in invalid.errors), invalid.errors


def test_a_traffic_type_without_its_pattern_is_refused_naming_the_field():
    # Found by the property above: the structural check admits these; the CRD's CEL rule and the parser refuse them.
    for kind, field in (("STAIRS", "stairs must be an object"), ("PHASES", "phases must be a non-empty list")):
        with pytest.raises(spec_module.InvalidSpec) as refused:
            spec_module.parse({"model": {}, "trafficPattern": {"trafficType": kind}}, check=False)
        assert refused.value.errors == [f"spec.trafficPattern.{field} when trafficType is {kind}"]


def test_a_file_is_held_to_the_crds_schema_naming_each_field():
    (sample,) = schema.rightsize_jobs((SAMPLES / "fraud-local.yaml").read_text())
    raw = {**sample["spec"], "instanceType": ["local-1cpu"], "resourceLimit": {"maxNumberOfTests": "two"}}
    try:
        registry.validate_file(raw)
    except spec_module.InvalidSpec as invalid:
        assert invalid.errors == ["spec: Additional properties are not allowed ('instanceType' was unexpected)",
                                  "spec.resourceLimit.maxNumberOfTests: 'two' is not of type 'integer'"]
    else:
        raise AssertionError("a misspelt field and a string count were admitted")
