"""Where the control plane's kube-apiserver and etcd come from.

`KUBEBUILDER_ASSETS` (the envtest convention: one folder holding `kube-apiserver` and `etcd`) wins when set.
Otherwise the pinned versions are built with the Go toolchain from the Go module proxy, once, into
`~/.cache/rightsizer/envtest/<version>/`; the pins are the `require` lines of the wrapper modules in `gomod/`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOMOD_DIR = Path(__file__).parent / "gomod"


class BinariesUnavailable(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class ControlPlaneBinaries:
    kube_apiserver: Path
    etcd: Path


def _required_version(module_dir: Path, module: str) -> str:
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^require {re.escape(module)} (v\S+)$", text, re.MULTILINE)
    if not match:
        raise BinariesUnavailable(f"{module_dir / 'go.mod'} has no 'require {module} vX' line")
    return match.group(1)


def pinned_versions() -> dict[str, str]:
    return {
        "kube-apiserver": _required_version(GOMOD_DIR / "kube-apiserver", "k8s.io/kubernetes"),
        "etcd": _required_version(GOMOD_DIR / "etcd", "go.etcd.io/etcd/server/v3"),
    }


def kustomize_version() -> str:
    return _required_version(GOMOD_DIR / "kustomize", "sigs.k8s.io/kustomize/kustomize/v5")


def kustomize(build: bool = True, log=lambda message: print(message, file=sys.stderr)) -> Path:
    """The pinned kustomize, built once into the cache (a tool for manifests, not part of the control plane)."""
    on_path = os.environ.get("RIGHTSIZER_KUSTOMIZE")
    if on_path:
        return Path(on_path)
    destination = cache_root().parent / "tools" / f"kustomize-{kustomize_version()}"
    binary = destination / "kustomize"
    if binary.exists():
        return binary
    if not build:
        raise BinariesUnavailable(f"kustomize is not built yet (expected at {binary}); run `rightsizer cluster build`")
    destination.mkdir(parents=True, exist_ok=True)
    with open(destination / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            partial = destination / "kustomize.partial"
            _go_build("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", partial, "-s -w", log)
            partial.rename(binary)
    return binary


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rightsizer" / "envtest"


def version_label() -> str:
    versions = pinned_versions()
    return f"{versions['kube-apiserver'].lstrip('v')}-etcd{versions['etcd'].lstrip('v')}"


def _ldflags_for_kubernetes(version: str) -> str:
    major, minor, _ = version.lstrip("v").split(".", 2)
    prefix = "k8s.io/component-base/version"
    return " ".join(
        ["-s", "-w", f"-X {prefix}.gitVersion={version}", f"-X {prefix}.gitMajor={major}",
         f"-X {prefix}.gitMinor={minor}", f"-X {prefix}.gitTreeState=clean"]
    )


def _go_build(module: str, package: str | list[str], output: Path, ldflags: str, log) -> None:
    """Build `package` into the file `output`, or a list of packages into the directory `output`."""
    go = shutil.which("go")
    if go is None:
        raise BinariesUnavailable(
            "no Go toolchain on PATH to build the control plane; install Go or set KUBEBUILDER_ASSETS "
            "to a folder holding kube-apiserver and etcd"
        )
    with tempfile.TemporaryDirectory(prefix=f"rightsizer-build-{module}-") as workdir:
        # The wrapper module is copied out because a wheel's files may be read-only.
        shutil.copytree(GOMOD_DIR / module, workdir, dirs_exist_ok=True)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly")
        packages = [package] if isinstance(package, str) else package
        target = str(output) if isinstance(package, str) else f"{output}{os.sep}"
        command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", target, *packages]
        log(f"building {module}: {' '.join(command)}")
        result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise BinariesUnavailable(f"building {module} failed:\n{result.stderr[-4000:]}")


def build_pinned(destination: Path | None = None, log=lambda message: print(message, file=sys.stderr)) -> ControlPlaneBinaries:
    """Build the pinned binaries into the cache (or `destination`) unless they are there already."""
    destination = destination or cache_root() / version_label()
    destination.mkdir(parents=True, exist_ok=True)
    binaries = ControlPlaneBinaries(destination / "kube-apiserver", destination / "etcd")
    # Several pytest sessions or shells may race to build: one builds, the others wait on the lock.
    with open(destination / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        versions = pinned_versions()
        started = time.monotonic()
        built_any = False
        if not binaries.kube_apiserver.exists():
            partial = destination / "kube-apiserver.partial"
            _go_build("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", partial,
                      _ldflags_for_kubernetes(versions["kube-apiserver"]), log)
            partial.rename(binaries.kube_apiserver)
            built_any = True
        if not binaries.etcd.exists():
            partial = destination / "etcd.partial"
            _go_build("etcd", ".", partial, "-s -w", log)
            partial.rename(binaries.etcd)
            built_any = True
        if built_any:
            log(f"built the control plane ({version_label()}) in {time.monotonic() - started:.0f} s into {destination}")
    return binaries


def resolve(build: bool = True) -> ControlPlaneBinaries:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        binaries = ControlPlaneBinaries(Path(assets) / "kube-apiserver", Path(assets) / "etcd")
        missing = [str(path) for path in dataclasses.astuple(binaries) if not os.access(path, os.X_OK)]
        if missing:
            raise BinariesUnavailable(f"KUBEBUILDER_ASSETS={assets} lacks executable {', '.join(missing)}")
        return binaries
    cached = cache_root() / version_label()
    binaries = ControlPlaneBinaries(cached / "kube-apiserver", cached / "etcd")
    if all(path.exists() for path in dataclasses.astuple(binaries)):
        return binaries
    if not build:
        raise BinariesUnavailable(f"control plane binaries are not built yet (expected in {cached}); run `rightsizer cluster build`")
    return build_pinned(cached)


# -- the node of `rightsizer cluster up --node` ----------------------------------------------------------------

# Built from the kube-apiserver wrapper module, so every Kubernetes binary is the same pinned release.
KUBERNETES_NODE_COMMANDS = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
COREDNS_COMMANDS = ("coredns",)  # a build of CoreDNS with the cluster-DNS plugins only (gomod/coredns/main.go)
# From Debian packages (runc, containernetworking-plugins, iptables): C or long-stable tools the distribution keeps
# patched; the CNI plugins' directory is where Debian installs them.
DEBIAN_PACKAGES = ("runc", "containernetworking-plugins", "iptables")
CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclasses.dataclass(frozen=True)
class NodeBinaries:
    directory: Path  # every command of KUBERNETES_NODE_COMMANDS and CONTAINERD_COMMANDS
    runc: Path
    cni_bin_dir: Path
    iptables: Path

    def __getitem__(self, command: str) -> Path:
        return self.directory / command


def containerd_version() -> str:
    return _required_version(GOMOD_DIR / "containerd", "github.com/containerd/containerd/v2")


def coredns_version() -> str:
    return _required_version(GOMOD_DIR / "coredns", "github.com/coredns/coredns")


def node_label() -> str:
    return (f"{pinned_versions()['kube-apiserver'].lstrip('v')}-containerd{containerd_version().lstrip('v')}"
            f"-coredns{coredns_version().lstrip('v')}")


def node_cache_dir() -> Path:
    return cache_root().parent / "node" / node_label()


def _debian_tools() -> tuple[Path, Path]:
    runc, iptables = shutil.which("runc"), shutil.which("iptables")
    missing = [name for name, found in (("runc", runc), ("iptables", iptables),
                                        ("CNI plugins", (CNI_BIN_DIR / "bridge").exists() or None)) if not found]
    if missing:
        raise BinariesUnavailable(
            f"{', '.join(missing)} not found; install the Debian packages: apt-get install {' '.join(DEBIAN_PACKAGES)}")
    return Path(runc), Path(iptables)


def build_node(build: bool = True, log=lambda message: print(message, file=sys.stderr)) -> NodeBinaries:
    """The node's binaries from the cache, built there first when missing (and `build` allows it)."""
    destination = node_cache_dir()
    runc, iptables = _debian_tools()
    binaries = NodeBinaries(destination, runc, CNI_BIN_DIR, iptables)
    missing = [name for name in KUBERNETES_NODE_COMMANDS + CONTAINERD_COMMANDS + COREDNS_COMMANDS
               if not binaries[name].exists()]
    if not missing:
        return binaries
    if not build:
        raise BinariesUnavailable(f"the node's binaries are not built yet ({', '.join(missing)} missing in "
                                  f"{destination}); run `rightsizer cluster build --node`")
    destination.mkdir(parents=True, exist_ok=True)
    with open(destination / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        groups = [
            ("kube-apiserver", [name for name in KUBERNETES_NODE_COMMANDS if not binaries[name].exists()],
             "k8s.io/kubernetes/cmd/{}", _ldflags_for_kubernetes(pinned_versions()["kube-apiserver"])),
            ("containerd", [name for name in CONTAINERD_COMMANDS if not binaries[name].exists()],
             "github.com/containerd/containerd/v2/cmd/{}",
             f"-s -w -X github.com/containerd/containerd/v2/version.Version={containerd_version()}"),
            ("coredns", [name for name in COREDNS_COMMANDS if not binaries[name].exists()], ".", "-s -w"),
        ]
        for module, names, package, ldflags in groups:
            if not names:
                continue
            # One `go build` per module builds its commands in parallel; the results are moved in only when whole.
            partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=destination))
            try:
                _go_build(module, [package.format(name) for name in names], partial, ldflags, log)
                for name in names:
                    (partial / name).rename(binaries[name])
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        log(f"built the node ({node_label()}) in {time.monotonic() - started:.0f} s into {destination}")
    return binaries
