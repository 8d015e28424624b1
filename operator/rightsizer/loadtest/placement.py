"""Where each candidate "instance" of a local job runs on this host: which CPUs the model server is pinned to
and how much memory it may use, or why the candidate is skipped.

A candidate is either
- a local profile `local-<N>cpu` or `local-<N>cpu-<M>gi`: N CPUs and a cap of M GiB of memory. Without `-gi`
  the cap is DEFAULT_MEMORY_GIB_PER_CPU GiB per CPU. That is the smallest memory-per-vCPU ratio of any CPU
  instance in the SageMaker catalog (c5, c6i, c7i, t2.medium), so a bare profile is never more generous
  than a real instance with as many vCPUs; or
- a SageMaker type `ml.*`, emulated with as many host CPUs as it has vCPUs and a cap equal to its memory,
  both from the bundled catalog (rightsizer.pricing). A host CPU is one logical CPU, as a vCPU is one
  hyperthread.

The model server gets CPUs of its own, apart from the load generator's CPUs, so that the load does not
steal the server's cycles (on shared cores the server would measure slower than it serves). A candidate that needs more CPUs than remain is skipped, as
are accelerator types and types that are not in the catalog. Memory is a ceiling, not a reservation: a
candidate whose memory is larger than the host has available still runs, but with its cap lowered to what
is available, and its placement says so.

Placing is pure, so it can be tested with made-up hosts. Only HostFacts.detect() and cgroup_limits() read
anything (the affinity mask, /proc and the cgroup files).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import psutil

from rightsizer import pricing

GIB = 1 << 30
MIB = 1 << 20
DEFAULT_MEMORY_GIB_PER_CPU = 2
# A Python model server needs about 150-250 MiB resident before its first request (KServe's was measured at
# 164 MiB, MLServer's at 234 MiB). With less than this, a run could only fail on its memory cap.
MIN_SERVER_MEMORY_BYTES = 256 * MIB
# Of a container's CPU quota, kept for the operator process (its event loop, status writes, CPU sampling).
QUOTA_HEADROOM_CORES = 0.5

LOCAL_PROFILE = re.compile(r"local-(?P<cpus>[1-9][0-9]*)cpu(?:-(?P<gib>[1-9][0-9]*)gi)?")
_BURSTABLE_FAMILIES = ("ml.t2.",)


class PlacementError(ValueError):
    """The job's local settings cannot work on this host at all (not a problem of one candidate)."""


def format_bytes(size: float) -> str:
    """2 GiB, 2.1 GiB, 512 MiB: three significant digits at most, binary units."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if abs(size) >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def format_cpus(cpus: Iterable[int]) -> str:
    """CPU ids the way taskset and cpusets write them: 0-3,6."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


def _cpus_phrase(cpus: Sequence[int]) -> str:
    return f"{'CPU' if len(cpus) == 1 else 'CPUs'} {format_cpus(cpus)}"


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What this process may use on this host. Tests build these by hand; the operator calls detect()."""

    cpus: tuple[int, ...]  # CPU ids this process may run on (its affinity mask)
    memory_total_bytes: int
    memory_available_bytes: int
    # A container's CPU quota in cores (cgroup cpu.max). It can be smaller than len(cpus): a pod limited to
    # 2 cores still sees every CPU of its node in its affinity mask.
    cpu_limit_cores: float | None = None
    # Hyper-threads of one physical core (sysfs thread_siblings_list), each group listed once; CPUs alone on
    # their core need not appear.
    core_siblings: tuple[tuple[int, ...], ...] = ()

    def siblings_of(self, cpus: Iterable[int]) -> set[int]:
        """The other hyper-threads of the physical cores `cpus` run on."""
        cpus = set(cpus)
        return {cpu for group in self.core_siblings if cpus & set(group) for cpu in group} - cpus

    def __post_init__(self):
        object.__setattr__(self, "cpus", tuple(sorted(set(self.cpus))))

    @classmethod
    def detect(cls, cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
               membership_file: str | os.PathLike = "/proc/self/cgroup") -> HostFacts:
        memory = psutil.virtual_memory()
        limits = cgroup_limits(Path(cgroup_root), _read(Path(membership_file)) or "")
        total, available = memory.total, memory.available
        if limits.memory_limit_bytes is not None:
            total = min(total, limits.memory_limit_bytes)
        if limits.memory_headroom_bytes is not None:
            available = min(available, limits.memory_headroom_bytes)
        cpus = tuple(os.sched_getaffinity(0))
        groups = {tuple(_cpu_list(_read(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"))))
                  for cpu in cpus}
        return cls(cpus=cpus, memory_total_bytes=total, memory_available_bytes=max(0, available),
                   cpu_limit_cores=limits.cpu_limit_cores,
                   core_siblings=tuple(sorted(group for group in groups if len(group) > 1)))


@dataclasses.dataclass(frozen=True)
class CgroupLimits:
    cpu_limit_cores: float | None = None
    memory_limit_bytes: int | None = None
    # The limit minus the working set (usage without inactive page cache, as the kubelet counts it).
    memory_headroom_bytes: int | None = None


def _cpu_list(text: str | None) -> list[int]:
    """A kernel CPU list ("0-3,8,10-11") as CPU ids; [] for None or a malformed list."""
    cpus: list[int] = []
    try:
        for part in (text or "").split(","):
            if part.strip():
                first, _, last = part.partition("-")
                cpus.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        return []
    return sorted(set(cpus))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _stat_value(stat_text: str | None, key: str) -> int:
    for line in (stat_text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _cgroup_chain(root: Path, membership: str, controller: str | None) -> list[Path]:
    """The process's cgroup directory for `controller` (None: the cgroup v2 hierarchy) and its ancestors.

    With a cgroup namespace the membership path is "/" and the mount is the container's own cgroup; without
    one the path names the cgroup under the host's hierarchy, which may or may not be mounted.
    """
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, cgroup_path = rest.partition(":")
        if controller is None and not (hierarchy == "0" and controllers == ""):
            continue
        if controller is not None and controller not in controllers.split(","):
            continue
        base = root if controller is None else next(
            (root / name for name in (controllers, controller) if (root / name).is_dir()), None)
        if base is None:
            return []
        directory = base / cgroup_path.lstrip("/")
        if not directory.is_dir():
            directory = base
        chain = [directory]
        while chain[-1] != base:
            chain.append(chain[-1].parent)
        return chain
    return []


def cgroup_limits(root: Path, membership: str) -> CgroupLimits:
    """The tightest CPU quota and memory limit over this process's cgroup and its ancestors (v2 or v1)."""
    cpu_cores: list[float] = []
    memory_limits: list[int] = []
    headrooms: list[int] = []
    for directory in _cgroup_chain(root, membership, None):
        quota = (_read(directory / "cpu.max") or "max").split()
        if quota[0] != "max":
            cpu_cores.append(int(quota[0]) / int(quota[1]))
        limit = _read(directory / "memory.max")
        if limit and limit != "max":
            used = int(_read(directory / "memory.current") or 0)
            inactive = _stat_value(_read(directory / "memory.stat"), "inactive_file")
            memory_limits.append(int(limit))
            headrooms.append(int(limit) - max(0, used - inactive))
    for directory in _cgroup_chain(root, membership, "cpu"):
        quota = int(_read(directory / "cpu.cfs_quota_us") or -1)
        if quota > 0:
            cpu_cores.append(quota / int(_read(directory / "cpu.cfs_period_us") or 100_000))
    for directory in _cgroup_chain(root, membership, "memory"):
        limit = int(_read(directory / "memory.limit_in_bytes") or 0)
        # cgroup v1 writes "no limit" as the largest page-aligned 63-bit number.
        if 0 < limit < (1 << 62):
            used = int(_read(directory / "memory.usage_in_bytes") or 0)
            inactive = _stat_value(_read(directory / "memory.stat"), "total_inactive_file")
            memory_limits.append(limit)
            headrooms.append(limit - max(0, used - inactive))
    return CgroupLimits(min(cpu_cores, default=None), min(memory_limits, default=None), min(headrooms, default=None))


@dataclasses.dataclass(frozen=True)
class InstanceShape:
    """What a candidate asks for, before it meets a host."""

    instance_type: str
    vcpus: int
    memory_bytes: int
    accelerators: int = 0
    accelerator_kind: str | None = None
    hosting: bool = True  # False: a catalog type SageMaker endpoints do not accept (ml.t3)


def instance_shape(instance_type: str) -> InstanceShape | None:
    """The vCPUs and memory of a local profile or a catalog ml.* type; None when the name is neither."""
    profile = LOCAL_PROFILE.fullmatch(instance_type)
    if profile:
        cpus = int(profile["cpus"])
        gib = int(profile["gib"]) if profile["gib"] else cpus * DEFAULT_MEMORY_GIB_PER_CPU
        return InstanceShape(instance_type, cpus, gib * GIB)
    size = pricing.instance_size(instance_type)
    if size is None:
        return None
    return InstanceShape(instance_type, size.vcpus, int(size.memory_gib * GIB), size.accelerators,
                         size.accelerator_kind, size.hosting)


@dataclasses.dataclass(frozen=True)
class Placement:
    instance_type: str
    cpus: tuple[int, ...]  # pin the model server's process tree to exactly these
    memory_limit_bytes: int  # the cap to enforce (may be below instance_memory_bytes, see notes)
    price_per_hour: float | None
    price_source: str  # where the price came from, or why there is none
    vcpus: int  # what the instance has: MemoryUtilization and CPUUtilization are relative to these
    instance_memory_bytes: int
    load_generator_cpus: tuple[int, ...]
    notes: tuple[str, ...] = ()  # how this placement differs from the instance it emulates

    @property
    def shares_cpus_with_load_generator(self) -> bool:
        return bool(set(self.cpus) & set(self.load_generator_cpus))


@dataclasses.dataclass(frozen=True)
class Skipped:
    instance_type: str
    reason: str


@dataclasses.dataclass(frozen=True)
class LoadGeneratorCpus:
    cpus: tuple[int, ...]
    shared_with_server: bool  # only on a 1-CPU host when the user did not choose the CPUs
    chosen_by: str  # "spec.local.loadGeneratorCpus" or how they were picked


def choose_load_generator_cpus(host: HostFacts, requested: Sequence[int] | None) -> LoadGeneratorCpus:
    """The user's CPUs for the load generator, or the last usable CPU; on a 1-CPU host, that CPU, shared.

    An empty list counts as not given. Requested CPUs the process cannot use are an error for the whole job.
    """
    if not host.cpus:
        raise PlacementError("this process may not run on any CPU (empty affinity mask)")
    if requested:
        unusable = sorted(set(requested) - set(host.cpus))
        if unusable:
            raise PlacementError(
                f"spec.local.loadGeneratorCpus names {_cpus_phrase(unusable)}, which this process cannot use "
                f"(usable: {format_cpus(host.cpus)})")
        return LoadGeneratorCpus(tuple(sorted(set(requested))), False, "spec.local.loadGeneratorCpus")
    if len(host.cpus) == 1:
        return LoadGeneratorCpus(host.cpus, True, "the only usable CPU, shared with the model server")
    return LoadGeneratorCpus(host.cpus[-1:], False, "the last usable CPU (spec.local.loadGeneratorCpus not given)")


def _price(instance_type: str, overrides: Mapping[str, float] | None) -> pricing.PriceQuote:
    quote = pricing.price_per_hour(instance_type, overrides)
    if quote.price is not None:
        return quote
    why = (f"{instance_type} is a local profile, which has no catalog price"
           if LOCAL_PROFILE.fullmatch(instance_type) else quote.source)
    return pricing.PriceQuote(None, f"{why}; give it a price in spec.local.pricePerHour")


def place(instance_type: str, host: HostFacts, load_generator: LoadGeneratorCpus,
          price_overrides: Mapping[str, float] | None = None) -> Placement | Skipped:
    shape = instance_shape(instance_type)
    if shape is None:
        if instance_type.startswith("ml."):
            return Skipped(instance_type, f"unknown instance type: {instance_type} is not in the bundled SageMaker "
                                          "catalog, so its vCPUs and memory are not known")
        return Skipped(instance_type, f"unknown instance type: {instance_type} is neither a local-<N>cpu[-<M>gi] "
                                      "profile nor a SageMaker ml.* type")
    if not shape.hosting:
        return Skipped(instance_type, f"{instance_type} is not a SageMaker real-time hosting instance type, so "
                                      "there is no endpoint to emulate")
    if shape.accelerators:
        count = f"{shape.accelerators} accelerator{'' if shape.accelerators == 1 else 's'}"
        return Skipped(instance_type, f"{instance_type} has {count}, {shape.accelerator_kind}; the local backend "
                                      "emulates CPUs and memory, not accelerators")

    generator = load_generator.cpus
    free = host.cpus if load_generator.shared_with_server else tuple(c for c in host.cpus if c not in generator)
    # A hyper-thread of the load generator's core would share its execution units with it: taken last.
    generator_siblings = host.siblings_of(generator) if not load_generator.shared_with_server else set()
    free = tuple(sorted(free, key=lambda cpu: (cpu in generator_siblings, cpu)))
    vcpu_word = "vCPU" if shape.vcpus == 1 else "vCPUs"
    if shape.vcpus > len(free):
        has = (f"{len(free)} usable" if load_generator.shared_with_server
               else f"{len(free)} free after the load generator's {_cpus_phrase(generator)}")
        return Skipped(instance_type, f"{instance_type} needs {shape.vcpus} {vcpu_word}; this host has {has}")
    if host.cpu_limit_cores is not None:
        # The load generator and the operator itself run in the same container, so they count against the same
        # quota: a server that uses all that is left gets the whole container throttled at each CFS period's end,
        # which reads as the server's own tail latency.
        left = host.cpu_limit_cores - (0 if load_generator.shared_with_server else len(generator)) - QUOTA_HEADROOM_CORES
        if shape.vcpus > left + 1e-9:
            return Skipped(instance_type, f"{instance_type} needs {shape.vcpus} {vcpu_word}; this container's CPU "
                                          f"limit is {host.cpu_limit_cores:g} cores, {max(left, 0):g} after the "
                                          f"load generator's {_cpus_phrase(generator)} and {QUOTA_HEADROOM_CORES:g} "
                                          f"kept for the operator (raise the limit)")

    notes: list[str] = []
    memory_limit = shape.memory_bytes
    if memory_limit > host.memory_available_bytes:
        if host.memory_available_bytes < MIN_SERVER_MEMORY_BYTES:
            return Skipped(instance_type, f"{instance_type} would get only "
                                          f"{format_bytes(host.memory_available_bytes)} of memory, all this host "
                                          f"has available (a model server needs at least "
                                          f"{format_bytes(MIN_SERVER_MEMORY_BYTES)})")
        memory_limit = host.memory_available_bytes
        notes.append(f"memory capped at {format_bytes(memory_limit)}, what this host has available, instead of "
                     f"{instance_type}'s {format_bytes(shape.memory_bytes)}")
    cpus = free[:shape.vcpus]
    shared_core = sorted(set(cpus) & generator_siblings)
    if shared_core:
        notes.append(f"{_cpus_phrase(shared_core)} share{'s' if len(shared_core) == 1 else ''} a physical core with "
                     f"the load generator's {_cpus_phrase(generator)} (hyper-threads): the two compete for it")
    if load_generator.shared_with_server:
        notes.append(f"this host has a single usable CPU ({format_cpus(host.cpus)}): the model server and the "
                     "load generator share it, so throughput and latency include the load generator's CPU use")
    if instance_type.startswith(_BURSTABLE_FAMILIES):
        notes.append(f"{instance_type} is burstable: emulated at full CPU speed, without CPU credits")

    price = _price(instance_type, price_overrides)
    return Placement(instance_type=instance_type, cpus=cpus, memory_limit_bytes=memory_limit,
                     price_per_hour=price.price, price_source=price.source, vcpus=shape.vcpus,
                     instance_memory_bytes=shape.memory_bytes, load_generator_cpus=generator, notes=tuple(notes))


@dataclasses.dataclass(frozen=True)
class Plan:
    load_generator: LoadGeneratorCpus
    placements: tuple[Placement | Skipped, ...]  # one per candidate, in the candidates' order

    @property
    def placed(self) -> list[Placement]:
        return [p for p in self.placements if isinstance(p, Placement)]

    @property
    def skipped(self) -> list[Skipped]:
        return [p for p in self.placements if isinstance(p, Skipped)]


def plan(instance_types: Sequence[str], host: HostFacts, load_generator_cpus: Sequence[int] | None = None,
         price_overrides: Mapping[str, float] | None = None) -> Plan:
    """Place every candidate (spec.instanceTypes) on `host`; raises PlacementError for unusable job settings."""
    generator = choose_load_generator_cpus(host, load_generator_cpus)
    return Plan(generator, tuple(place(name, host, generator, price_overrides) for name in instance_types))

