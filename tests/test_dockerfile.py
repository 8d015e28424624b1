"""The Dockerfile's hardening rules, checked on its parse (dockerfile_parse): no image can be built on these
machines. The wheel its build stage makes is then built for real, without docker: the build context is
rebuilt in a temporary directory from the build stage's COPY lines and .dockerignore, and pip builds the wheel
there. The wheel must hold the CRD (a real file, not the symlink the source tree has) and the go.mod files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OCI_LABELS = ("title", "description", "source", "licenses", "version")
BUILD_TOOLS = re.compile(r"(?<![\w-])(apt-get|apt|aptitude|apk|yum|dnf|microdnf|gcc|g\+\+|cc|clang|make|"
                         r"build-essential|[\w.+]+-dev(el)?)(?![\w-])")
PIP_INSTALL = re.compile(r"\bpip3?(\.\d+)?\s+(install|wheel|download)\b")


# -- the parse -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE), env_replace=True)


@pytest.fixture(scope="module")
def stages(parser) -> list[dict]:
    """One entry per FROM: its resolved image, its alias and its instructions (FROM excluded)."""
    instructions = [i for i in parser.structure if i["instruction"] not in ("COMMENT",)]
    result: list[dict] = []
    images = iter(parser.parent_images)  # FROM images with the global ARGs substituted
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append({"image": next(images), "raw": words[0], "alias": alias, "instructions": []})
        elif result:
            result[-1]["instructions"].append(instruction)
    return result


def _of(stage: dict, name: str) -> list[str]:
    return [i["value"] for i in stage["instructions"] if i["instruction"] == name]


def _flags(value: str) -> tuple[dict[str, str], list[str]]:
    """`--from=build --chown=1:1 a b c` -> ({"from": "build", "chown": "1:1"}, ["a", "b", "c"])."""
    flags, words = {}, []
    for word in shlex.split(value):
        if word.startswith("--") and not words:
            key, _, flag_value = word[2:].partition("=")
            flags[key] = flag_value
        else:
            words.append(word)
    return flags, words


def _commands(run_value: str) -> list[str]:
    """A RUN's shell command split at && ; || and |."""
    return [c.strip() for c in re.split(r"&&|\|\||;|\|", run_value) if c.strip()]


def _build_stage(stages) -> dict:
    """The stage the final one takes its wheels from (COPY --from= or RUN --mount=...,from=)."""
    final = stages[-1]
    referenced = {_flags(c)[0].get("from") for c in _of(final, "COPY")}
    for run in _of(final, "RUN"):
        mount = _flags(run)[0].get("mount", "")
        referenced |= {part[5:] for part in mount.split(",") if part.startswith("from=")}
    named = [s for s in stages[:-1] if s["alias"] in referenced]
    assert len(named) == 1, f"the final stage takes files from {sorted(filter(None, referenced))}"
    return named[0]


# -- the rules -----------------------------------------------------------------------------------------------
def test_multi_stage(stages):
    assert len(stages) >= 2
    assert all(s["alias"] for s in stages[:-1]), "every stage but the last is named, for COPY --from/--mount"


def test_every_from_is_pinned_to_a_version_tag_never_latest(stages):
    aliases = {s["alias"] for s in stages if s["alias"]}
    for stage in stages:
        image = stage["image"]
        if image in aliases:
            continue  # FROM an earlier stage
        assert "$" not in image, f"FROM {stage['raw']} does not resolve to an image: {image}"
        name, _, digest = image.partition("@")
        assert ":" in name.rsplit("/", 1)[-1], f"{image} has no tag"
        tag = name.rsplit(":", 1)[1]
        assert tag != "latest" and "latest" not in image
        # An exact version: major.minor.patch (3.11.14-slim-bookworm), not 3, 3.11 or slim.
        assert re.match(r"\d+\.\d+\.\d+(?![.\d])", tag), f"{image}: the tag is not an exact version"
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image


def test_base_is_slim_python(stages):
    for stage in stages:
        if stage["image"] not in {s["alias"] for s in stages}:
            assert re.match(r"(docker\.io/)?(library/)?python:\d+\.\d+\.\d+-slim", stage["image"]), stage["image"]


def test_no_latest_anywhere(parser):
    for instruction in parser.structure:
        if instruction["instruction"] != "COMMENT":
            assert not re.search(r":latest\b", instruction["value"]), instruction["content"]


def test_no_remote_add(parser):
    for instruction in parser.structure:
        if instruction["instruction"] == "ADD":
            _, words = _flags(instruction["value"])
            assert not any(re.match(r"(https?|git|ssh)://|git@", w) for w in words[:-1]), instruction["content"]


def test_final_user_is_numeric_and_not_root(stages):
    users = _of(stages[-1], "USER")
    assert users, "the final stage sets no USER: it would run as root"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].strip())
    assert match, f"USER {users[-1]} is not numeric (runAsNonRoot can only verify a numeric user)"
    uid, gid = match.groups()
    assert int(uid) != 0 and (gid is None or int(gid) != 0)
    assert users[-1].strip() == "65532:65532"


def test_entrypoint_is_exec_form(stages):
    entrypoints = _of(stages[-1], "ENTRYPOINT")
    assert entrypoints, "no ENTRYPOINT in the final stage"
    assert json.loads(entrypoints[-1]) == ["rightsizer", "operator"]


def test_oci_labels(parser):
    labels = parser.labels  # the final stage's, with its ARG defaults substituted
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"org.opencontainers.image.{key} is missing"
    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]


def test_runtime_writes_nothing_outside_tmp(parser, stages):
    envs = parser.envs  # the final stage's
    assert envs.get("HOME") == "/tmp"
    assert envs.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert all(w == "/tmp" or w.startswith("/tmp/") for w in _of(stages[-1], "WORKDIR"))
    assert not _of(stages[-1], "VOLUME")


def test_every_pip_install_uses_no_cache_dir(stages):
    for stage in stages:
        for run in _of(stage, "RUN"):
            for command in _commands(run):
                if PIP_INSTALL.search(command):
                    assert "--no-cache-dir" in command.split(), command


def test_final_stage_has_no_build_tools_and_no_package_manager(stages):
    for run in _of(stages[-1], "RUN"):
        _, words = _flags(run.replace("\\\n", " "))
        found = BUILD_TOOLS.search(" ".join(words))
        assert not found, f"{found.group(0)!r} in the final stage: {run}"


def test_final_stage_installs_only_the_built_wheels(stages):
    build_aliases = {s["alias"] for s in stages[:-1]}
    final = stages[-1]
    assert not _of(final, "ADD")
    for copy in _of(final, "COPY"):
        flags, _ = _flags(copy)
        assert flags.get("from") in build_aliases, f"the final stage copies from the build context: COPY {copy}"
    installs = [c for run in _of(final, "RUN") for c in _commands(run) if PIP_INSTALL.search(c)]
    assert installs, "the final stage installs nothing"
    for command in installs:
        words = command.split()
        assert "--no-index" in words, f"the final stage may reach an index: {command}"
        assert any(w.startswith("--find-links") for w in words), command
    for run in _of(final, "RUN"):
        flags, _ = _flags(run)
        mount = flags.get("mount")
        if mount:
            options = dict(part.partition("=")[::2] for part in mount.split(","))
            assert options.get("from") in build_aliases, mount


def test_build_stage_copies_what_the_wheel_needs(stages):
    build = _build_stage(stages)
    sources = set()
    for copy in _of(build, "COPY"):
        flags, words = _flags(copy)
        assert "from" not in flags
        sources |= {w.rstrip("/") for w in words[:-1]}
    assert {"crds", "operator", "pyproject.toml", "README.md"} <= sources, sources


def test_symlinks_in_the_copied_trees_point_inside_them(stages):
    """operator/rightsizer/data/rightsizejobs.yaml -> ../../../crds/rightsizejobs.yaml: a COPY of operator/
    alone would carry a dangling link into the image."""
    copied = [REPO / s for s in _copied_sources(stages)]
    links = [p for root in copied if root.is_dir() for p in root.rglob("*") if p.is_symlink()]
    assert REPO / "operator/rightsizer/data/rightsizejobs.yaml" in links
    for link in links:
        target = (link.parent / os.readlink(link)).resolve()
        assert target.exists(), link
        assert any(target == root.resolve() or root.resolve() in target.parents for root in copied), \
            f"{link} points at {target}, which the build stage does not copy"


# -- .dockerignore ---------------------------------------------------------------------------------------------
def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def _ignored(path: str, rules) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", ".pytest_cache/v/cache/nodeids", "tests/test_crd.py",
    "tests/__pycache__/conftest.cpython-311.pyc", "operator/rightsizer/__pycache__/cli.cpython-311.pyc",
    "operator/rightsizer.egg-info/SOURCES.txt", "build/lib/rightsizer/cli.py", "dist/rightsizer-0.1.0.whl",
    "benchmarks/x.py", "docs/api-reference.md", "manifests/rbac/role.yaml", ".env", "kubeconfig",
])
def test_dockerignore_keeps_out(path):
    assert _ignored(path, _dockerignore_rules()), path


def test_dockerignore_keeps_every_tracked_file_the_build_stage_copies(stages):
    rules = _dockerignore_rules()
    tracked = subprocess.run(["git", "ls-files", "--", *_copied_sources(stages)], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    assert "crds/rightsizejobs.yaml" in tracked and "operator/rightsizer/data/rightsizejobs.yaml" in tracked
    dropped = [p for p in tracked if _ignored(p, rules)]
    assert not dropped, f".dockerignore drops files the build needs: {dropped}"


# -- the wheel the build stage makes -----------------------------------------------------------------------------
def _copied_sources(stages) -> list[str]:
    return [w.rstrip("/") for copy in _of(_build_stage(stages), "COPY") for w in _flags(copy)[1][:-1]]


def _build_context(stages, root: Path) -> Path:
    """The build stage's WORKDIR after its COPY lines, from the context .dockerignore lets through.
    Symlinks are copied as symlinks, as COPY does."""
    rules = _dockerignore_rules()
    build = _build_stage(stages)
    workdir = PurePosixPath("/")
    for instruction in build["instructions"]:
        if instruction["instruction"] == "WORKDIR":
            workdir = workdir / instruction["value"]
        elif instruction["instruction"] == "COPY":
            _, words = _flags(instruction["value"])
            *sources, dest = words
            target = root / (workdir / dest).relative_to("/")
            for source in sources:
                source_path = REPO / source.rstrip("/")
                files = ([source_path] if not source_path.is_dir() else
                         [Path(d) / f for d, _, fs in os.walk(source_path) for f in fs])
                for file in files:
                    relative = file.relative_to(REPO).as_posix()
                    if _ignored(relative, rules):
                        continue
                    inside = file.relative_to(source_path) if source_path.is_dir() else Path(file.name)
                    out = target / inside
                    out.parent.mkdir(parents=True, exist_ok=True)
                    if file.is_symlink():
                        os.symlink(os.readlink(file), out)
                    else:
                        shutil.copy2(file, out)
    return root / workdir.relative_to("/")


def _git_leftovers() -> str:
    """What a wheel build could leave in the repository: build/, dist/, *.egg-info."""
    result = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--",
                             "build", "dist", "operator/build", "operator/dist", "*.egg-info"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    return result.stdout


@pytest.fixture(scope="module")
def wheel(stages, tmp_path_factory) -> zipfile.ZipFile:
    before = _git_leftovers()
    root = tmp_path_factory.mktemp("docker-build")
    context = _build_context(stages, root / "context")
    wheels = root / "wheels"
    # The build stage's `pip wheel .` (--no-deps here: only this package's wheel is inspected). The path is
    # absolute: a bare directory name would be looked up on the index as a project name.
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                             "--wheel-dir", str(wheels), str(context.resolve())],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert _git_leftovers() == before, "the wheel build left files in the repository"
    built = list(wheels.glob("rightsizer-*.whl"))
    assert len(built) == 1, built
    with zipfile.ZipFile(built[0]) as archive:
        yield archive


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def test_wheel_holds_the_crd_as_a_real_file(wheel):
    info = wheel.getinfo("rightsizer/data/rightsizejobs.yaml")
    assert not _is_symlink(info) and info.file_size > 0
    document = yaml.safe_load(wheel.read(info))
    assert document["kind"] == "CustomResourceDefinition"
    assert wheel.read(info) == (REPO / "crds" / "rightsizejobs.yaml").read_bytes()


def test_wheel_holds_the_go_modules(wheel):
    names = set(wheel.namelist())
    assert "rightsizer/cluster/gomod/kube-apiserver/go.mod" in names
    for go_mod in (REPO / "operator" / "rightsizer" / "cluster" / "gomod").glob("*/go.mod"):
        name = f"rightsizer/cluster/gomod/{go_mod.parent.name}/go.mod"
        assert name in names, name
        assert b"\nmodule " in b"\n" + wheel.read(name), name


def test_wheel_provides_the_entrypoint_command(wheel):
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\s*^rightsizer\s*=\s*rightsizer\.cli:main\s*$", text, re.M), text


def test_manager_deployment_matches_the_image(stages):
    """The Deployment's runAsUser/runAsGroup are the image's USER, and /tmp (the only place written) is mounted."""
    manager = REPO / "manifests" / "manager" / "manager.yaml"
    deployment = yaml.safe_load(manager.read_text())
    pod = deployment["spec"]["template"]["spec"]
    uid, gid = _of(stages[-1], "USER")[-1].split(":")
    assert str(pod["securityContext"]["runAsUser"]) == uid
    assert str(pod["securityContext"].get("runAsGroup", gid)) == gid
    container = pod["containers"][0]
    assert any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", ()))
