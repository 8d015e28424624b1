"""Instance sizes and hourly prices: the bundled SageMaker catalog, and the user's overrides on top of it.

The catalog is `data/sagemaker-prices-us-east-1.csv`: SageMaker real-time inference (hosting) instance types
with their vCPUs, memory, accelerators and us-east-1 on-demand price. Its sources, snapshot date and caveats
are in the sibling `data/sagemaker-prices-us-east-1.md`. Nothing here depends on a backend: the local
backend prices the instances it emulates with it, and the SageMaker backend can fill in a cost SageMaker
leaves out.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import types
from importlib import resources
from typing import Mapping, NamedTuple

CATALOG_RESOURCE = "data/sagemaker-prices-us-east-1.csv"
CATALOG_REGION = "us-east-1"
# The date the primary source read its prices from the AWS Price List API (see the .md beside the CSV).
CATALOG_SNAPSHOT_DATE = "2026-09-27"
OVERRIDE_SOURCE = "spec.local.pricePerHour"

_COLUMNS = ("instance_type", "vcpu", "memory_gib", "accelerators", "accelerator_kind", "price_per_hour_usd",
            "price_evidence", "hosting_type")
_EVIDENCE = frozenset({"two-sources", "one-source", "none"})


@dataclasses.dataclass(frozen=True)
class InstanceSize:
    instance_type: str
    vcpus: int
    memory_gib: float
    accelerators: int
    accelerator_kind: str | None  # e.g. "GPU (NVIDIA T4)"; None for CPU-only types
    price_per_hour: float | None  # USD, on-demand, us-east-1; None when no source gave a hosting price
    price_evidence: str  # "two-sources" | "one-source" | "none" (meaning: the .md beside the CSV)
    hosting: bool  # whether SageMaker real-time endpoints accept the type (ProductionVariantInstanceType)


class PriceQuote(NamedTuple):
    """An hourly price and where it came from; when `price` is None, `source` says why there is none."""

    price: float | None
    source: str


def _parse_row(row: Mapping[str, str], line: int) -> InstanceSize:
    try:
        price_text = row["price_per_hour_usd"].strip()
        evidence = row["price_evidence"].strip()
        hosting = row["hosting_type"].strip()
        if evidence not in _EVIDENCE or hosting not in ("yes", "no") or (price_text == "") != (evidence == "none"):
            raise ValueError(f"inconsistent price_evidence {evidence!r} / hosting_type {hosting!r} / price "
                             f"{price_text!r}")
        kind = row["accelerator_kind"].strip()
        return InstanceSize(
            instance_type=row["instance_type"].strip(),
            vcpus=int(row["vcpu"]),
            memory_gib=float(row["memory_gib"]),
            accelerators=int(row["accelerators"]),
            accelerator_kind=None if kind == "none" else kind,
            price_per_hour=float(price_text) if price_text else None,
            price_evidence=evidence,
            hosting=hosting == "yes",
        )
    except (KeyError, ValueError) as error:
        raise ValueError(f"{CATALOG_RESOURCE} line {line}: {error}") from error


@functools.cache
def catalog() -> Mapping[str, InstanceSize]:
    """Every catalog row by instance type (read once; read-only)."""
    with resources.files("rightsizer").joinpath(CATALOG_RESOURCE).open("r", encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise ValueError(f"{CATALOG_RESOURCE}: expected columns {_COLUMNS}, found {reader.fieldnames}")
        sizes: dict[str, InstanceSize] = {}
        for line, row in enumerate(reader, start=2):
            size = _parse_row(row, line)
            if size.instance_type in sizes:
                raise ValueError(f"{CATALOG_RESOURCE} line {line}: {size.instance_type} listed twice")
            sizes[size.instance_type] = size
    return types.MappingProxyType(sizes)


def instance_size(instance_type: str) -> InstanceSize | None:
    return catalog().get(instance_type)


def _catalog_label(evidence: str) -> str:
    return f"bundled SageMaker catalog ({CATALOG_REGION} on-demand, {CATALOG_SNAPSHOT_DATE}, {evidence})"


def price_per_hour(instance_type: str, overrides: Mapping[str, float] | None = None, *,
                   region: str | None = None, override_field: str = OVERRIDE_SOURCE) -> PriceQuote:
    """The hourly price of `instance_type`: the user's override if there is one, otherwise the catalog's.

    `region` is the region the caller would pay in. The catalog only knows us-east-1, so a catalog price is
    not given for other regions. Overrides apply in every region.
    """
    if overrides and instance_type in overrides:
        value = overrides[instance_type]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{override_field}.{instance_type} must be a number >= 0, not {value!r}")
        return PriceQuote(float(value), override_field)
    size = instance_size(instance_type)
    if size is None:
        return PriceQuote(None, f"{instance_type} is not in the bundled SageMaker price catalog")
    if region is not None and region != CATALOG_REGION:
        return PriceQuote(None, f"the bundled SageMaker price catalog covers {CATALOG_REGION} only, not {region}")
    if size.price_per_hour is None:
        why = ("it is not a SageMaker real-time hosting type" if not size.hosting
               else "no source with its hosting price was found")
        return PriceQuote(None, f"the bundled SageMaker price catalog has no price for {instance_type}: {why}")
    return PriceQuote(size.price_per_hour, _catalog_label(size.price_evidence))
