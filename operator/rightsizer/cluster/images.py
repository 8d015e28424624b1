"""Container images without a registry, for the node of `rightsizer cluster up --node`.

- the sandbox ("pause") image: Kubernetes' own `build/pause/linux/pause.c` from the pinned k8s.io/kubernetes
  module, compiled static, in an image of that one file;
- a Python 3.11 base from Debian packages (debootstrap; Debian 12's python3 is 3.11, as the Dockerfile's default
  base), with pip, setuptools and wheel installed as `python:3.11-slim` has them;
- the project's image, built from its own Dockerfile by buildah (daemonless) on that base.

Images are kept as docker-archive tarballs under ~/.cache/rightsizer/images, named by a hash of what they are made
from, and loaded into the node's containerd with `ctr images import`; pods use them with imagePullPolicy Never.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rightsizer.cluster import binaries as binaries_module

PAUSE_REF = "localhost/pause:3.10.2"  # the TAG of k8s.io/kubernetes build/pause/Makefile at v1.36.3
BASE_REF = "localhost/python:3.11-debian12"
PROJECT_REF = "localhost/rightsizer:dev"
DEBIAN_SUITE, DEBIAN_MIRROR = "bookworm", "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "ca-certificates", "python3-pip-whl", "python3-setuptools-whl", "python3-wheel-whl")
# What of the repository goes into the project's image (the Dockerfile's COPY lines).
PROJECT_CONTEXT = ("Dockerfile", "pyproject.toml", "README.md", "crds", "manifests/samples", "operator")

# containerd 2.x configuration (version 3). restrict_oom_score_adj: without CAP_SYS_RESOURCE (as in some VMs and
# containers) runc cannot lower a container's oom_score_adj below its own, and sandbox creation fails.
CONTAINERD_CONFIG = """\
version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox}"
"""


class ImageError(RuntimeError):
    pass


def images_dir() -> Path:
    return binaries_module.cache_root().parent / "images"


def _run(command: list[str], log=None, **kwargs) -> str:
    if log:
        log(" ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise ImageError(f"{' '.join(command)} failed ({result.returncode}):\n"
                         f"{(result.stdout + result.stderr).strip()[-4000:]}")
    return result.stdout.strip()


class _Buildah:
    """buildah with its own storage under the cache, so that nothing lands in the host's /var/lib/containers."""

    def __init__(self, log):
        self.log = log
        self.root = images_dir() / "buildah"
        self.runroot = Path(tempfile.mkdtemp(prefix="rightsizer-buildah-"))
        if shutil.which("buildah") is None:
            raise ImageError("buildah is not installed: apt-get install buildah")

    def __call__(self, *args: str, **kwargs) -> str:
        return _run(["buildah", "--root", str(self.root), "--runroot", str(self.runroot),
                     "--storage-driver", "overlay", *args], log=self.log, **kwargs)

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)

    def archive(self, reference: str, destination: Path) -> None:
        partial = destination.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self("push", reference, f"docker-archive:{partial}:{reference}")
        partial.rename(destination)

    def from_files(self, reference: str, files: dict[str, Path] | Path, config: list[str]) -> None:
        container = self("from", "scratch")
        try:
            if isinstance(files, Path):
                self("add", container, str(files), "/")  # a tarball of a root filesystem, extracted as it is
            else:
                for target, source in files.items():
                    self("copy", container, str(source), target)
            self("config", *config, container)
            self("commit", "--rm", container, reference)
        except BaseException:
            subprocess.run(["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "rm", container],
                           capture_output=True)
            raise


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _kubernetes_source() -> Path:
    version = binaries_module.pinned_versions()["kube-apiserver"]
    out = _run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"])
    return Path(json.loads(out)["Dir"])


def pause_image(log=lambda message: print(message, file=sys.stderr)) -> Path:
    source = _kubernetes_source() / "build" / "pause" / "linux" / "pause.c"
    cflags = ["-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10.2-rightsizer"]
    tarball = images_dir() / f"pause-{_digest(source.read_bytes(), ' '.join(cflags).encode())}.tar"
    if tarball.exists():
        return tarball
    images_dir().mkdir(parents=True, exist_ok=True)
    buildah = _Buildah(log)
    with tempfile.TemporaryDirectory(prefix="rightsizer-pause-") as work:
        binary = Path(work) / "pause"
        _run(["gcc", *cflags, "-o", str(binary), str(source)], log=log)
        buildah.from_files(PAUSE_REF, {"/pause": binary},
                           ["--entrypoint", '["/pause"]', "--user", "65535:65535", "--os", "linux",
                            "--arch", "amd64"])
        buildah.archive(PAUSE_REF, tarball)
    buildah.close()
    return tarball


def base_image(log=lambda message: print(message, file=sys.stderr)) -> Path:
    recipe = json.dumps([DEBIAN_SUITE, DEBIAN_MIRROR, BASE_PACKAGES, 2]).encode()
    tarball = images_dir() / f"python-{_digest(recipe)}.tar"
    buildah = _Buildah(log)
    try:
        present = subprocess.run(["buildah", "--root", str(buildah.root), "--runroot", str(buildah.runroot),
                                  "inspect", "--type", "image", BASE_REF], capture_output=True).returncode == 0
        if tarball.exists():
            if not present:  # the builder's storage was wiped: the tarball is the cache
                buildah("pull", f"docker-archive:{tarball}")
            return tarball
        images_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rightsizer-base-") as work:
            rootfs = Path(work) / "rootfs"
            started = time.monotonic()
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE,
                  str(rootfs), DEBIAN_MIRROR], log=log)
            # As python:3.11-slim has them: pip, setuptools and wheel as ordinary (uninstallable) packages under
            # /usr/local, a `python` command, and no PEP 668 marker (Debian's marks the system Python as managed).
            (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
            wheels = sorted(str(path.relative_to(rootfs)) for path in (rootfs / "usr/share/python-wheels").glob("*.whl"))
            pip_wheel = next(w for w in wheels if Path(w).name.startswith("pip-"))
            _run(["chroot", str(rootfs), "python3", f"/{pip_wheel}/pip", "install", "--no-index", "--no-cache-dir",
                  *(f"/{wheel}" for wheel in wheels)], log=log, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
            # The machine's trust store: where TLS is intercepted on the way out, a build inside the image needs it.
            shutil.copy2("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
            for trim in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
                         "var/lib/apt/lists", "var/cache/debconf/templates.dat-old", "usr/share/python-wheels"):
                shutil.rmtree(rootfs / trim, ignore_errors=True)
            layer = Path(work) / "rootfs.tar"
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(layer), "."])
            buildah.from_files(BASE_REF, layer, [
                "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--env", "LANG=C.UTF-8",
                "--cmd", '["python3"]', "--os", "linux", "--arch", "amd64"])
            log(f"made {BASE_REF} from Debian packages in {time.monotonic() - started:.0f} s")
        buildah.archive(BASE_REF, tarball)
        return tarball
    finally:
        buildah.close()


def _context_digest(repo: Path) -> str:
    listed = _run(["git", "-C", str(repo), "ls-files", "-z", "--", *PROJECT_CONTEXT]).split("\0")
    parts = []
    for name in sorted(filter(None, listed)):
        path = repo / name
        parts.append(name.encode())
        parts.append(os.readlink(path).encode() if path.is_symlink() else path.read_bytes() if path.is_file() else b"")
    return _digest(*parts)


def project_image(repo: Path, log=lambda message: print(message, file=sys.stderr)) -> Path:
    """The project's image from its Dockerfile on the local base, as a tarball (built when the sources changed)."""
    base = base_image(log)
    digest = _context_digest(repo)
    tarball = images_dir() / f"rightsizer-{digest}-{base.stem}.tar"
    if tarball.exists():
        return tarball
    buildah = _Buildah(log)
    try:
        started = time.monotonic()
        # --network host: the build stage's `pip wheel` reaches the package index as this machine does, and no
        # build network (a bridge and NAT rules of its own) is made.
        # REVISION keys the final stage's layer cache to the sources (the Dockerfile says why).
        buildah("bud", "--network", "host", "--pull=never", "--layers",
                "--build-arg", f"PYTHON_IMAGE={BASE_REF}", "--build-arg", f"REVISION={digest}",
                "-t", PROJECT_REF, "-f", str(repo / "Dockerfile"), str(repo), cwd=repo)
        log(f"built {PROJECT_REF} in {time.monotonic() - started:.0f} s")
        for stale in images_dir().glob("rightsizer-*.tar"):
            stale.unlink()
        buildah.archive(PROJECT_REF, tarball)
        return tarball
    finally:
        buildah.close()


def load(ctr: Path, socket: Path, tarball: Path) -> None:
    """Import an image into the node's containerd, in the namespace the kubelet uses."""
    _run([str(ctr), "--address", str(socket), "-n", "k8s.io", "images", "import", str(tarball)])
