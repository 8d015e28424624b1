"""Placement of candidate instances on made-up hosts (pure), and host detection from cgroup files."""

from __future__ import annotations

import dataclasses
import os

import pytest

from rightsizer.loadtest.placement import (
    GIB, MIB, MIN_SERVER_MEMORY_BYTES, CgroupLimits, HostFacts, InstanceShape, LoadGeneratorCpus, Placement,
    PlacementError, Skipped, cgroup_limits, choose_load_generator_cpus, format_bytes, format_cpus,
    instance_shape, place, plan)


def host(cpus=range(8), available_gib=30.0, total_gib=32.0, cpu_limit_cores=None) -> HostFacts:
    return HostFacts(cpus=tuple(cpus), memory_total_bytes=int(total_gib * GIB),
                     memory_available_bytes=int(available_gib * GIB), cpu_limit_cores=cpu_limit_cores)


def placed(result) -> Placement:
    assert isinstance(result, Placement), result
    return result


def skipped(result) -> str:
    assert isinstance(result, Skipped), result
    return result.reason


# -- what a candidate asks for ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "vcpus", "memory_bytes"), [
    ("local-1cpu", 1, 2 * GIB),  # the default: 2 GiB per CPU
    ("local-4cpu", 4, 8 * GIB),
    ("local-2cpu-3gi", 2, 3 * GIB),
    ("local-12cpu-1gi", 12, 1 * GIB),
    ("ml.m5.large", 2, 8 * GIB),
    ("ml.c5.9xlarge", 36, 72 * GIB),
])
def test_instance_shapes(name, vcpus, memory_bytes):
    shape = instance_shape(name)
    assert (shape.vcpus, shape.memory_bytes, shape.accelerators) == (vcpus, memory_bytes, 0)


def test_accelerators_and_hosting_come_from_the_catalog():
    assert instance_shape("ml.g4dn.12xlarge") == InstanceShape("ml.g4dn.12xlarge", 48, 192 * GIB, 4,
                                                                "GPU (NVIDIA T4)", True)
    assert instance_shape("ml.t3.medium").hosting is False


@pytest.mark.parametrize("name", ["local-0cpu", "local-1cpu-0gi", "local-1cpus", "local-cpu", "local-1cpu-2g",
                                  "ml.m5.huge", "m5.large", ""])
def test_names_that_are_no_shape(name):
    assert instance_shape(name) is None


# -- the load generator's CPUs ---------------------------------------------------------------------------

def test_load_generator_gets_the_last_usable_cpu_by_default():
    assert choose_load_generator_cpus(host(cpus=[3, 1, 7, 5]), None) == LoadGeneratorCpus(
        (7,), False, "the last usable CPU (spec.local.loadGeneratorCpus not given)")
    assert choose_load_generator_cpus(host(cpus=[0, 1]), []).cpus == (1,)


def test_load_generator_shares_the_only_cpu_of_a_one_cpu_host():
    generator = choose_load_generator_cpus(host(cpus=[2]), None)
    assert (generator.cpus, generator.shared_with_server) == ((2,), True)


def test_requested_load_generator_cpus_are_used_as_given():
    generator = choose_load_generator_cpus(host(), [5, 4, 5])
    assert generator == LoadGeneratorCpus((4, 5), False, "spec.local.loadGeneratorCpus")


def test_requested_load_generator_cpus_must_be_usable():
    with pytest.raises(PlacementError, match=r"spec\.local\.loadGeneratorCpus names CPUs 8-9, which this process "
                                             r"cannot use \(usable: 0-7\)"):
        choose_load_generator_cpus(host(), [1, 8, 9])


def test_a_process_without_cpus_cannot_place_anything():
    with pytest.raises(PlacementError, match="empty affinity mask"):
        plan(["local-1cpu"], host(cpus=[]))


# -- placing candidates ----------------------------------------------------------------------------------

def test_sagemaker_type_is_emulated_by_its_vcpus_and_memory():
    result = placed(plan(["ml.m5.xlarge"], host()).placements[0])
    assert result == Placement(
        instance_type="ml.m5.xlarge", cpus=(0, 1, 2, 3), memory_limit_bytes=16 * GIB, price_per_hour=0.23,
        price_source="bundled SageMaker catalog (us-east-1 on-demand, 2026-09-27, two-sources)", vcpus=4,
        instance_memory_bytes=16 * GIB, load_generator_cpus=(7,), notes=())
    assert not result.shares_cpus_with_load_generator


def test_too_big_for_the_cpus_left_after_the_load_generator():
    assert skipped(plan(["ml.m5.4xlarge"], host(cpus=[0, 1]), [1]).placements[0]) == (
        "ml.m5.4xlarge needs 16 vCPUs; this host has 1 free after the load generator's CPU 1")
    assert skipped(plan(["ml.m5.2xlarge"], host(), None).placements[0]) == (
        "ml.m5.2xlarge needs 8 vCPUs; this host has 7 free after the load generator's CPU 7")
    assert skipped(plan(["local-7cpu"], host(), [0, 1]).placements[0]) == (
        "local-7cpu needs 7 vCPUs; this host has 6 free after the load generator's CPUs 0-1")


def test_server_cpus_never_include_the_load_generators():
    result = placed(plan(["local-3cpu"], host(cpus=[1, 4, 6, 9, 11]), [4, 9]).placements[0])
    assert result.cpus == (1, 6, 11)
    assert result.load_generator_cpus == (4, 9)


def test_a_load_generator_on_every_cpu_leaves_none_for_the_server():
    assert skipped(plan(["local-1cpu"], host(cpus=[0, 1]), [0, 1]).placements[0]) == (
        "local-1cpu needs 1 vCPU; this host has 0 free after the load generator's CPUs 0-1")


def test_one_cpu_host_shares_its_cpu_and_says_so():
    result = plan(["local-1cpu", "local-2cpu"], host(cpus=[0]))
    one = placed(result.placements[0])
    assert one.cpus == (0,) and one.load_generator_cpus == (0,) and one.shares_cpus_with_load_generator
    assert one.notes == ("this host has a single usable CPU (0): the model server and the load generator share "
                         "it, so throughput and latency include the load generator's CPU use",)
    assert skipped(result.placements[1]) == "local-2cpu needs 2 vCPUs; this host has 1 usable"


@pytest.mark.parametrize(("name", "reason"), [
    ("ml.g5.xlarge", "ml.g5.xlarge has 1 accelerator, GPU (NVIDIA A10G); the local backend emulates CPUs and "
                     "memory, not accelerators"),
    ("ml.inf2.24xlarge", "ml.inf2.24xlarge has 6 accelerators, AWS Inferentia2; the local backend emulates CPUs "
                         "and memory, not accelerators"),
    ("ml.t3.large", "ml.t3.large is not a SageMaker real-time hosting instance type, so there is no endpoint to "
                    "emulate"),
    ("ml.p4d.24xlarge", "unknown instance type: ml.p4d.24xlarge is not in the bundled SageMaker catalog, so its "
                        "vCPUs and memory are not known"),
    ("ml.m5.huge", "unknown instance type: ml.m5.huge is not in the bundled SageMaker catalog, so its vCPUs and "
                   "memory are not known"),
    ("local-0cpu", "unknown instance type: local-0cpu is neither a local-<N>cpu[-<M>gi] profile nor a SageMaker "
                   "ml.* type"),
])
def test_candidates_that_cannot_be_emulated(name, reason):
    # A host big enough for any of them, so that size is not the reason.
    assert skipped(plan([name], host(cpus=range(256), available_gib=4096)).placements[0]) == reason


def test_memory_above_what_is_available_is_capped_and_noted():
    result = placed(plan(["ml.r5.large"], host(available_gib=6)).placements[0])
    assert (result.memory_limit_bytes, result.instance_memory_bytes) == (6 * GIB, 16 * GIB)
    assert result.notes == ("memory capped at 6 GiB, what this host has available, instead of ml.r5.large's "
                            "16 GiB",)


def test_too_little_memory_for_any_model_server_is_skipped():
    result = plan(["local-1cpu"], host(available_gib=0.1)).placements[0]
    assert skipped(result) == ("local-1cpu would get only 102 MiB of memory, all this host has available (a model "
                               "server needs at least 256 MiB)")
    assert placed(place("local-1cpu-1gi", host(available_gib=MIN_SERVER_MEMORY_BYTES / GIB),
                        choose_load_generator_cpus(host(), None))).memory_limit_bytes == MIN_SERVER_MEMORY_BYTES


def test_container_cpu_limit_counts_the_load_generator_and_the_operator_against_it():
    pod = host(cpus=range(16), cpu_limit_cores=4)
    result = plan(["ml.m5.large", "ml.m5.xlarge"], pod)
    assert placed(result.placements[0]).cpus == (0, 1)
    assert skipped(result.placements[1]) == ("ml.m5.xlarge needs 4 vCPUs; this container's CPU limit is 4 cores, "
                                             "2.5 after the load generator's CPU 15 and 0.5 kept for the operator "
                                             "(raise the limit)")
    # Exactly what is left, with nothing for the operator, would be throttled: not placed.
    assert skipped(plan(["ml.m5.large"], host(cpus=range(16), cpu_limit_cores=3)).placements[0])
    assert placed(plan(["ml.m5.large"], host(cpus=range(16), cpu_limit_cores=3.5)).placements[0])


def test_burstable_types_run_without_cpu_credits_and_say_so():
    result = placed(plan(["ml.t2.medium"], host()).placements[0])
    assert result.notes == ("ml.t2.medium is burstable: emulated at full CPU speed, without CPU credits",)
    assert result.price_per_hour == 0.056


def test_prices_come_from_overrides_then_the_catalog_and_unpriced_ones_say_how_to_price_them():
    result = plan(["local-1cpu", "local-2cpu", "ml.m5.large", "ml.c5d.large"], host(),
                  price_overrides={"local-1cpu": 0.05, "ml.m5.large": 0.1})
    one, two, m5, c5d = (placed(p) for p in result.placements)
    assert (one.price_per_hour, one.price_source) == (0.05, "spec.local.pricePerHour")
    assert (two.price_per_hour, two.price_source) == (
        None, "local-2cpu is a local profile, which has no catalog price; give it a price in spec.local.pricePerHour")
    assert (m5.price_per_hour, m5.price_source) == (0.1, "spec.local.pricePerHour")
    assert (c5d.price_per_hour, c5d.price_source) == (
        None, "the bundled SageMaker price catalog has no price for ml.c5d.large: no source with its hosting price "
              "was found; give it a price in spec.local.pricePerHour")


def test_plan_keeps_the_candidates_order_and_splits_placed_from_skipped():
    result = plan(["ml.m5.4xlarge", "local-1cpu", "ml.g5.xlarge", "local-2cpu-1gi"], host(cpus=[0, 1, 2, 3]))
    assert [p.instance_type for p in result.placements] == ["ml.m5.4xlarge", "local-1cpu", "ml.g5.xlarge",
                                                            "local-2cpu-1gi"]
    assert [p.instance_type for p in result.placed] == ["local-1cpu", "local-2cpu-1gi"]
    assert [p.instance_type for p in result.skipped] == ["ml.m5.4xlarge", "ml.g5.xlarge"]
    # Each candidate runs alone, so each starts from the lowest free CPUs.
    assert [p.cpus for p in result.placed] == [(0,), (0, 1)]
    assert result.load_generator.cpus == (3,)


# -- small formatting helpers ----------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "text"), [(2 * GIB, "2 GiB"), (int(2.1 * GIB), "2.1 GiB"), (512 * MIB, "512 MiB"),
                                            (int(22.8 * GIB), "22.8 GiB"), (1536, "1.5 KiB"), (12, "12 B")])
def test_format_bytes(size, text):
    assert format_bytes(size) == text


def test_format_cpus_writes_ranges():
    assert format_cpus([7, 0, 1, 2, 5, 6]) == "0-2,5-7"
    assert format_cpus([3]) == "3"


def test_host_facts_sort_and_deduplicate_cpus():
    assert HostFacts(cpus=(3, 1, 3), memory_total_bytes=1, memory_available_bytes=1).cpus == (1, 3)


# -- host detection --------------------------------------------------------------------------------------

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limits_are_the_tightest_along_the_path(tmp_path):
    pod = tmp_path / "kubepods" / "pod1"
    container = pod / "ctr"
    write(pod / "cpu.max", "400000 100000\n")
    write(pod / "memory.max", str(8 * GIB))
    write(pod / "memory.current", str(3 * GIB))
    write(container / "cpu.max", "150000 100000\n")
    write(container / "memory.max", "max\n")
    write(container / "memory.current", str(3 * GIB))
    write(tmp_path / "cpu.max", "max 100000\n")
    # 1 GiB of the pod's usage is inactive page cache, which the kernel reclaims before it kills anything.
    write(pod / "memory.stat", f"anon 123\ninactive_file {1 * GIB}\nactive_file 5\n")
    limits = cgroup_limits(tmp_path, "0::/kubepods/pod1/ctr\n")
    assert limits == CgroupLimits(cpu_limit_cores=1.5, memory_limit_bytes=8 * GIB, memory_headroom_bytes=6 * GIB)


def test_cgroup_v2_inside_a_cgroup_namespace_reads_the_mount_itself(tmp_path):
    write(tmp_path / "cpu.max", "200000 100000")
    write(tmp_path / "memory.max", str(4 * GIB))
    write(tmp_path / "memory.current", str(1 * GIB))
    assert cgroup_limits(tmp_path, "0::/\n") == CgroupLimits(2.0, 4 * GIB, 3 * GIB)


def test_cgroup_v1_limits(tmp_path):
    write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "50000")
    write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    write(tmp_path / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(2 * GIB))
    write(tmp_path / "memory" / "docker" / "abc" / "memory.usage_in_bytes", str(1 * GIB))
    write(tmp_path / "memory" / "docker" / "abc" / "memory.stat", f"cache 1\ntotal_inactive_file {512 * MIB}\n")
    write(tmp_path / "memory" / "memory.limit_in_bytes", "9223372036854771712")  # v1's "no limit"
    membership = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n"
    assert cgroup_limits(tmp_path, membership) == CgroupLimits(0.5, 2 * GIB, GIB + 512 * MIB)


def test_no_cgroup_limits(tmp_path):
    assert cgroup_limits(tmp_path, "") == CgroupLimits()
    write(tmp_path / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1")
    assert cgroup_limits(tmp_path, "4:memory:/x\n2:cpu:/x\n") == CgroupLimits()


def test_detect_reads_this_process_and_applies_a_cgroup_memory_limit(tmp_path):
    write(tmp_path / "memory.max", str(1 * GIB))
    write(tmp_path / "memory.current", str(256 * MIB))
    write(tmp_path / "cpu.max", "100000 100000")
    membership = tmp_path / "membership"
    membership.write_text("0::/\n")
    facts = HostFacts.detect(cgroup_root=tmp_path, membership_file=membership)
    assert facts.cpus == tuple(sorted(os.sched_getaffinity(0)))
    assert facts.memory_total_bytes == 1 * GIB
    assert 0 < facts.memory_available_bytes <= 768 * MIB
    assert facts.cpu_limit_cores == 1.0


def test_detect_on_this_host():
    facts = HostFacts.detect()
    assert facts.cpus == tuple(sorted(os.sched_getaffinity(0)))
    assert 0 < facts.memory_available_bytes <= facts.memory_total_bytes


def test_the_load_generators_hyper_thread_sibling_is_taken_last_and_named_when_taken():
    # Two physical cores with two hyper-threads each: CPUs 0 and 2 on one core, 1 and 3 on the other.
    smt = dataclasses.replace(host(cpus=range(4)), core_siblings=((0, 2), (1, 3)))
    result = plan(["ml.m5.large", "local-3cpu"], smt)  # the load generator takes CPU 3
    two = placed(result.placements[0])
    assert two.cpus == (0, 2) and not any("physical core" in note for note in two.notes)
    three = placed(result.placements[1])
    assert three.cpus == (0, 2, 1)
    assert ("CPU 1 shares a physical core with the load generator's CPU 3 (hyper-threads): the two compete for it"
            in three.notes)


def test_kernel_cpu_lists_are_read():
    from rightsizer.loadtest.placement import _cpu_list
    assert _cpu_list("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert _cpu_list("5") == [5] and _cpu_list(None) == [] and _cpu_list("x-y") == []
