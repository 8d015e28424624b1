"""manifests/iam/operator-policy.json grants the operator's identity exactly the SageMaker calls its code makes.

The calls are found in the source, not listed here: every `self._call("<boto3 method>", ...)` under
operator/rightsizer, mapped to its API operation by botocore's own method_to_api_mapping. A new call without a
policy line fails the suite, and so does a policy line no call needs any more.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import boto3
import pytest
import yaml

from rightsizer import spec as spec_module
from rightsizer.model import Owner
from rightsizer.backends.sagemaker import translate

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "operator" / "rightsizer"
POLICY_PATH = REPO / "manifests" / "iam" / "operator-policy.json"
README_PATH = REPO / "manifests" / "iam" / "README.md"
SAMPLES = REPO / "manifests" / "samples"

JOB_ARN = "arn:aws:sagemaker:*:<ACCOUNT_ID>:inference-recommendations-job/*"
JOB_ROLE_ARN = "arn:aws:iam::<ACCOUNT_ID>:role/<JOB_ROLE_NAME>"
PLACEHOLDERS = {"<ACCOUNT_ID>", "<JOB_ROLE_NAME>"}
# Operations that act on one inference recommendations job (GetScalingConfigurationRecommendation names the job
# whose recommendation it scales), so their Resource is the job ARN pattern.
JOB_SCOPED = re.compile(r"^(\w+InferenceRecommendationsJob(Steps)?|GetScalingConfigurationRecommendation|ListTags|"
                        r"AddTags)$")


# -- what the code calls -------------------------------------------------------------------------------------
def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _call_sites() -> tuple[list[tuple[str, int, str]], list[tuple[str, int]]]:
    """(literal `_call` sites as (file, line, boto3 method), non-literal `_call` sites as (file, line))."""
    literal, non_literal = [], []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_call"):
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                literal.append((where, node.lineno, first.value))
            else:
                non_literal.append((where, node.lineno))
    return literal, non_literal


@pytest.fixture(scope="module")
def sagemaker():
    # No request is sent: the client is only a view of botocore's bundled service model.
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


@pytest.fixture(scope="module")
def called_operations(sagemaker) -> set[str]:
    literal, _ = _call_sites()
    mapping = sagemaker.meta.method_to_api_mapping
    unknown = sorted({(f, line, m) for f, line, m in literal if m not in mapping})
    assert not unknown, f"_call names a method the sagemaker client does not have: {unknown}"
    return {mapping[method] for _, _, method in literal}


@pytest.fixture(scope="module")
def creates_with_tags(sagemaker, called_operations) -> set[str]:
    """Called Create* operations that can carry Tags: tag-on-create is authorized as sagemaker:AddTags."""
    model = sagemaker.meta.service_model
    return {op for op in called_operations
            if op.startswith("Create") and "Tags" in model.operation_model(op).input_shape.members}


# -- the policy ----------------------------------------------------------------------------------------------
def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def policy() -> dict:
    return json.loads(POLICY_PATH.read_text())


@pytest.fixture(scope="module")
def statements(policy) -> list[dict]:
    return policy["Statement"]


def _actions(statements) -> list[str]:
    return [action for statement in statements for action in _as_list(statement["Action"])]


def _statements_with(statements, action: str) -> list[dict]:
    return [s for s in statements if action in _as_list(s["Action"])]


# -- the tests -----------------------------------------------------------------------------------------------
def test_every_call_names_its_operation_with_a_string_literal():
    literal, non_literal = _call_sites()
    assert not non_literal, (f"_call with a non-literal operation cannot be checked against the IAM policy: "
                             f"{non_literal}")
    # The walk sees the backend's calls at all (a renamed helper would otherwise make this suite vacuous).
    assert {m for _, _, m in literal} >= {"create_inference_recommendations_job",
                                          "describe_inference_recommendations_job"}


def test_sagemaker_clients_are_only_used_through_call():
    """A call that bypasses _call would be invisible to the policy check; a client of another AWS service
    would need policy lines this test does not know about."""
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(REPO))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name == "client_for":
                enclosing = node
                while enclosing in parents and not isinstance(enclosing, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    enclosing = parents[enclosing]
                if getattr(enclosing, "name", None) != "_call":
                    offenders.append((where, node.lineno, "client_for outside _call"))
            if name == "client" and node.args and isinstance(node.args[0], ast.Constant):
                if node.args[0].value != "sagemaker":
                    offenders.append((where, node.lineno, f"a {node.args[0].value!r} client"))
    assert not offenders, offenders


def test_policy_grants_exactly_the_sagemaker_actions_the_code_calls(statements, called_operations,
                                                                     creates_with_tags):
    granted = {a for a in _actions(statements) if a.startswith("sagemaker:")}
    expected = {f"sagemaker:{op}" for op in called_operations}
    if creates_with_tags:
        expected.add("sagemaker:AddTags")
    assert sorted(expected - granted) == [], "the code calls these and the policy does not grant them"
    assert sorted(granted - expected) == [], "the policy grants these and no code calls them (stale lines)"


def test_the_only_other_action_is_pass_role(statements):
    others = {a for a in _actions(statements) if not a.startswith("sagemaker:")}
    assert others == {"iam:PassRole"}


def test_every_sagemaker_action_is_an_operation_of_the_service_model(statements, sagemaker):
    operations = set(sagemaker.meta.service_model.operation_names)
    unknown = [a for a in _actions(statements) if a.startswith("sagemaker:") and a.split(":", 1)[1] not in operations]
    assert not unknown, f"not operations of botocore's sagemaker model: {unknown}"


def test_no_wildcard_actions(statements):
    wildcards = [a for a in _actions(statements) if "*" in a or "?" in a]
    assert not wildcards, wildcards
    assert not any("NotAction" in s for s in statements)


def test_statements_are_allows_with_unique_sids(policy, statements):
    assert policy["Version"] == "2012-10-17"
    sids = [s.get("Sid") for s in statements]
    assert all(sid and re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
    assert len(sids) == len(set(sids)), sids
    assert all(s["Effect"] == "Allow" for s in statements)


def test_job_actions_are_scoped_to_inference_recommendations_jobs(statements):
    for statement in statements:
        for action in _as_list(statement["Action"]):
            if action.startswith("sagemaker:") and JOB_SCOPED.match(action.split(":", 1)[1]):
                assert _as_list(statement["Resource"]) == [JOB_ARN], (statement["Sid"], action)


def test_add_tags_only_while_creating_the_jobs(statements, creates_with_tags):
    add_tags = _statements_with(statements, "sagemaker:AddTags")
    if not creates_with_tags:
        assert not add_tags
        return
    assert len(add_tags) == 1
    statement = add_tags[0]
    assert _as_list(statement["Action"]) == ["sagemaker:AddTags"], "the tagging condition must not cover others"
    tagging = statement["Condition"]["StringEquals"]["sagemaker:TaggingAction"]
    assert set(_as_list(tagging)) == creates_with_tags


def test_create_requests_do_carry_tags():
    """The AddTags line is there because the request tags the job with its owner; without them it is stale."""
    document = next(d for d in yaml.safe_load_all((SAMPLES / "fraud-default.yaml").read_text())
                    if d and d.get("kind") == "RightsizeJob")
    request = translate.build_request(spec_module.parse(document["spec"]), Owner("ml", "fraud-default", "u"), 1)
    assert translate.OPERATION == "CreateInferenceRecommendationsJob"
    assert request.get("Tags")


def test_pass_role_is_the_job_role_and_only_to_sagemaker(statements):
    pass_role = _statements_with(statements, "iam:PassRole")
    assert len(pass_role) == 1
    statement = pass_role[0]
    assert _as_list(statement["Action"]) == ["iam:PassRole"]
    resources = _as_list(statement["Resource"])
    assert "*" not in resources and not any("*" in r for r in resources), resources
    assert resources == [JOB_ROLE_ARN]
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_placeholders_are_the_documented_ones():
    text = POLICY_PATH.read_text()
    assert set(re.findall(r"<[A-Z_]+>", text)) == PLACEHOLDERS
    readme = README_PATH.read_text()
    assert all(p in readme for p in PLACEHOLDERS)


def test_readme_explains_every_statement(statements):
    readme = README_PATH.read_text()
    missing = [s["Sid"] for s in statements if s["Sid"] not in readme]
    assert not missing, f"manifests/iam/README.md does not mention {missing}"
    for needle in ("pods.eks.amazonaws.com", "sts:TagSession", "sts:AssumeRoleWithWebIdentity"):
        assert needle in readme, needle
