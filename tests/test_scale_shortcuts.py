"""What the operator does to stay cheap with many jobs gives the answers the long way would
(benchmarks/operator_scale.py measures what each saves)."""

from __future__ import annotations

import copy
import datetime

import kopf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from rightsizer import handlers
from rightsizer import spec as spec_module
from rightsizer import status as st
from rightsizer.backends import registry

from test_reconcile import ADVANCED, DEFAULT

PREFIX, KEY = handlers.ANNOTATION_PREFIX, "last-handled-configuration"

scalars = hs.one_of(hs.none(), hs.booleans(), hs.integers(), hs.text(max_size=8))
values = hs.recursive(scalars, lambda inner: hs.one_of(hs.lists(inner, max_size=3),
                                                       hs.dictionaries(hs.text(max_size=6), inner, max_size=3)),
                      max_leaves=12)
annotation_keys = hs.sampled_from([f"{PREFIX}/{KEY}", f"{PREFIX}/reconcile_spec", "rightsizer.io/approve",
                                   "rightsizer.io/rollback", "kubectl.kubernetes.io/last-applied-configuration",
                                   "other.io/x", "kopf.zalando.org/last-handled-configuration"])
bodies = hs.fixed_dictionaries(
    {"apiVersion": hs.just("rightsizer.io/v1alpha1"), "kind": hs.just("RightsizeJob"),
     "metadata": hs.fixed_dictionaries(
         {"name": hs.just("job"), "namespace": hs.just("ns"), "uid": hs.just("u"), "resourceVersion": hs.just("7")},
         optional={"labels": hs.dictionaries(hs.text(min_size=1, max_size=5), hs.text(max_size=5), max_size=3),
                   "annotations": hs.dictionaries(annotation_keys, hs.text(max_size=8), max_size=4),
                   "managedFields": hs.lists(values, max_size=2), "finalizers": hs.lists(hs.text(max_size=5))}),
     "spec": hs.dictionaries(hs.text(min_size=1, max_size=6), values, max_size=4)},
    optional={"status": hs.dictionaries(hs.text(min_size=1, max_size=6), values, max_size=4)})
extra_fields = hs.lists(hs.sampled_from([
    ("metadata", "annotations", "rightsizer.io/approve"), ("metadata", "labels"), "spec.model", ("status", "phase"),
    ("metadata", "finalizers"), "status.nextPollTime"]), max_size=2)


@settings(max_examples=300, deadline=None)
@given(bodies, extra_fields)
def test_the_lean_essence_is_kopfs_own(body, fields):
    # kopf diffs this essence to tell a spec change from a status write: it must be exactly kopf's.
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=KEY)
    lean = handlers._LeanDiffBaseStorage(prefix=PREFIX, key=KEY)
    before = copy.deepcopy(body)
    assert lean.build(body=kopf.Body(body), extra_fields=fields) == kopfs.build(body=kopf.Body(body),
                                                                                extra_fields=fields)
    assert body == before  # and the body is left as it was


def test_a_spec_is_judged_once_and_the_answer_is_the_same():
    registry._validate_json.cache_clear()
    first = registry.validate(copy.deepcopy(ADVANCED))
    again = registry.validate(copy.deepcopy(ADVANCED))
    assert again is first and registry._validate_json.cache_info().hits == 1
    assert first == registry._validate(ADVANCED)  # the long way gives the same
    assert registry.validate(DEFAULT) != first


def test_an_invalid_spec_is_refused_every_time_and_a_spec_that_is_not_json_is_judged_as_it_is():
    broken = {**DEFAULT, "instanceTypes": ["ml.t2.medium"]}  # burstable: Inference Recommender rejects it
    for _ in range(2):
        with pytest.raises(spec_module.InvalidSpec):
            registry.validate(broken)
    # A YAML date in a file's spec (rightsizer validate): not JSON, so not remembered, and judged the long way.
    dated = {**copy.deepcopy(DEFAULT), "note": datetime.date(2026, 3, 1)}
    remembered = registry._validate_json.cache_info().currsize
    assert judged(registry.validate, dated) == judged(registry._validate, dated)
    assert registry._validate_json.cache_info().currsize == remembered


def judged(validate, spec):
    try:
        return validate(spec)
    except spec_module.InvalidSpec as invalid:
        return invalid.errors


def test_our_timestamps_read_fast_and_any_other_form_the_slow_way():
    assert st.parse_timestamp("2026-03-01T12:00:30Z") == datetime.datetime(2026, 3, 1, 12, 0, 30,
                                                                           tzinfo=datetime.timezone.utc)
    for wrong in ("2026-13-01T12:00:30Z", "2026-03-01T12:00:3xZ", "2026-03-01 12:00:30", "2026-03-01T12:00:30+01:00"):
        with pytest.raises(ValueError):
            st.parse_timestamp(wrong)
    assert st.parse_timestamp(None) is None and st.parse_timestamp("") is None
