"""The bundled SageMaker price catalog and the price lookup with overrides."""

from __future__ import annotations

import hashlib
from importlib import resources

import botocore.session
import pytest

from rightsizer import pricing

SNAPSHOT_SHA256 = "50649368d854bc8349952f31261dd6bad839df2db5d900b0a6034e66fbabe95a"


def test_catalog_has_every_row_and_the_priced_ones():
    rows = pricing.catalog()
    assert len(rows) == 123
    assert sum(size.price_per_hour is not None for size in rows.values()) == 102
    assert sum(size.hosting for size in rows.values()) == 119
    assert sorted(name for name, size in rows.items() if not size.hosting) == [
        "ml.t3.2xlarge", "ml.t3.large", "ml.t3.medium", "ml.t3.xlarge"]


@pytest.mark.parametrize(("instance_type", "price"), [
    # The seed figures' anchors (sagemaker-prices-note.md, "Anchors from the seed figures").
    ("ml.m5.large", 0.115), ("ml.m5.xlarge", 0.23), ("ml.m5.2xlarge", 0.461), ("ml.m5.4xlarge", 0.922),
    ("ml.m5.12xlarge", 2.765), ("ml.c5.9xlarge", 1.836)])
def test_seed_anchors(instance_type, price):
    assert pricing.price_per_hour(instance_type).price == price


def test_rows_carry_sizes_accelerators_and_evidence():
    m5 = pricing.instance_size("ml.m5.large")
    assert (m5.vcpus, m5.memory_gib, m5.accelerators, m5.accelerator_kind) == (2, 8, 0, None)
    assert (m5.price_evidence, m5.hosting) == ("two-sources", True)
    g5 = pricing.instance_size("ml.g5.12xlarge")
    assert (g5.vcpus, g5.memory_gib, g5.accelerators, g5.accelerator_kind) == (48, 192, 4, "GPU (NVIDIA A10G)")
    assert pricing.instance_size("ml.p3.2xlarge").memory_gib == 61
    assert pricing.instance_size("ml.c7g.large").price_evidence == "none"
    assert pricing.instance_size("ml.m5.huge") is None


def test_evidence_is_none_exactly_when_there_is_no_price():
    for size in pricing.catalog().values():
        assert (size.price_per_hour is None) == (size.price_evidence == "none"), size.instance_type
    evidence = [size.price_evidence for size in pricing.catalog().values()]
    assert (evidence.count("two-sources"), evidence.count("one-source"), evidence.count("none")) == (37, 65, 21)


def test_every_hosting_type_is_in_botocores_production_variant_enum():
    model = botocore.session.get_session().get_service_model("sagemaker")
    enum = set(model.shape_for("ProductionVariantInstanceType").enum)
    for name, size in pricing.catalog().items():
        assert (name in enum) == size.hosting, name


def test_catalog_is_read_once_and_read_only():
    assert pricing.catalog() is pricing.catalog()
    with pytest.raises(TypeError):
        pricing.catalog()["ml.m5.large"] = None


def test_bundled_catalog_is_the_shared_snapshot_with_its_provenance_beside_it():
    data = resources.files("rightsizer").joinpath("data")
    csv_bytes = data.joinpath("sagemaker-prices-us-east-1.csv").read_bytes()
    # The research snapshot byte for byte (CRLF line ends included); a price edit must update this hash and
    # the provenance note together.
    assert hashlib.sha256(csv_bytes).hexdigest() == SNAPSHOT_SHA256
    provenance = data.joinpath("sagemaker-prices-us-east-1.md").read_text()
    assert pricing.CATALOG_SNAPSHOT_DATE == "2026-09-27"
    for fact in ("2026-09-27", "us-east-1", "ProductionVariantInstanceType", "two-sources", "one-source",
                 "foundation-model-benchmarking-tool", "awsdocs/amazon-ec2-user-guide"):
        assert fact in provenance, fact


def test_catalog_price_names_its_source_and_date():
    price, source = pricing.price_per_hour("ml.m5.large")
    assert price == 0.115
    assert source == "bundled SageMaker catalog (us-east-1 on-demand, 2026-09-27, two-sources)"


def test_overrides_win_over_the_catalog():
    overrides = {"ml.m5.large": 0.2, "local-1cpu": 0.05, "ml.c7g.large": 0}
    assert pricing.price_per_hour("ml.m5.large", overrides) == (0.2, "spec.local.pricePerHour")
    assert pricing.price_per_hour("local-1cpu", overrides) == (0.05, "spec.local.pricePerHour")
    assert pricing.price_per_hour("ml.c7g.large", overrides) == (0.0, "spec.local.pricePerHour")
    # Types the overrides do not name still come from the catalog.
    assert pricing.price_per_hour("ml.m5.xlarge", overrides).price == 0.23


@pytest.mark.parametrize("bad", [-1, "0.1", True, None])
def test_an_override_that_is_not_a_price_is_refused(bad):
    with pytest.raises(ValueError, match=r"spec\.local\.pricePerHour\.ml\.m5\.large must be a number >= 0"):
        pricing.price_per_hour("ml.m5.large", {"ml.m5.large": bad})


@pytest.mark.parametrize(("instance_type", "reason"), [
    ("ml.c5d.large", "the bundled SageMaker price catalog has no price for ml.c5d.large: no source with its "
                     "hosting price was found"),
    ("ml.t3.medium", "the bundled SageMaker price catalog has no price for ml.t3.medium: it is not a SageMaker "
                     "real-time hosting type"),
    ("ml.p4d.24xlarge", "ml.p4d.24xlarge is not in the bundled SageMaker price catalog"),
    ("local-1cpu", "local-1cpu is not in the bundled SageMaker price catalog"),
])
def test_unpriced_types_say_why(instance_type, reason):
    assert pricing.price_per_hour(instance_type) == (None, reason)


def test_catalog_prices_only_its_own_region():
    assert pricing.price_per_hour("ml.m5.large", region="us-east-1").price == 0.115
    assert pricing.price_per_hour("ml.m5.large", region="eu-west-1") == (
        None, "the bundled SageMaker price catalog covers us-east-1 only, not eu-west-1")
    assert pricing.price_per_hour("ml.m5.large", {"ml.m5.large": 0.13}, region="eu-west-1").price == 0.13

