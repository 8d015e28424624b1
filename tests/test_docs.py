"""The API reference is generated from the CRD; a stale copy fails the suite (`rightsizer docs` refreshes it)."""

from conftest import REPO
from rightsizer import schema
from rightsizer.tools import apidocs


def test_api_reference_is_generated_from_the_crd():
    assert (REPO / "docs" / "api-reference.md").read_text() == apidocs.render()


def test_api_reference_names_every_spec_field_and_rule():
    text = apidocs.render()
    for name in schema.spec_schema()["properties"]:
        assert f"`spec.{name}`" in text
    assert "spec.sagemaker.roleArn is required when spec.backend is sagemaker" in text
    assert "| Ready | `.status.conditions[?(@.type==\"Ready\")].status` | always |" in text
