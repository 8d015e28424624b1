"""A real kube-apiserver + etcd on 127.0.0.1, for tests, the demo and users without a cluster.

No kubelet, scheduler or controller-manager: the API server alone gives structural schemas, CEL validation, the
status subresource, finalizers, resourceVersion conflicts, RBAC and server-side apply, which is what an
operator's behaviour depends on. Namespaces are never finalized (that is the controller-manager's job), so
callers use fresh namespaces rather than deleting them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from rightsizer.cluster import binaries as binaries_module
from rightsizer.cluster import pki as pki_module

SERVICE_CIDR = "10.96.0.0/24"
START_TIMEOUT_SECONDS = float(os.environ.get("RIGHTSIZER_CONTROLPLANE_START_TIMEOUT", "120"))
STOP_TIMEOUT_SECONDS = 15.0


class ControlPlaneError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class RunningControlPlane:
    state_dir: Path
    kubeconfig: Path
    server: str
    apiserver_pid: int
    etcd_pid: int
    version: str


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rightsizer" / "cluster"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RESTART_BIND_ATTEMPTS = 25


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie child still answers kill(0): it is dead for our purposes.
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class ControlPlane:
    def __init__(self, state_dir: Path | None = None, address: str = "127.0.0.1",
                 extra_apiserver_args: tuple[str, ...] = (), service_ip: str | None = None):
        """`address`: where the API server listens and what it advertises (the `kubernetes` Service's endpoint);
        a node's harness gives a non-loopback address of its own, since the API server neither proxies to nor
        serves pods at loopback. `service_ip`: the `kubernetes` Service's ClusterIP, for the certificate."""
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.address = address
        self.extra_apiserver_args = extra_apiserver_args
        self.service_ip = service_ip
        self.state_file = self.state_dir / "state.json"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.log_dir = self.state_dir / "logs"

    # -- queries -------------------------------------------------------------------------------------------
    def running(self) -> RunningControlPlane | None:
        """The control plane this state dir describes, if both processes live and the API server is ready."""
        if not self.state_file.exists():
            return None
        try:
            state = json.loads(self.state_file.read_text())
            running = RunningControlPlane(
                state_dir=self.state_dir, kubeconfig=Path(state["kubeconfig"]), server=state["server"],
                apiserver_pid=state["apiserver_pid"], etcd_pid=state["etcd_pid"], version=state["version"])
        except (ValueError, KeyError):
            return None
        if not (_alive(running.apiserver_pid) and _alive(running.etcd_pid)):
            return None
        return running if self._ready(running.server) else None

    def _ssl_context(self) -> ssl.SSLContext:
        pki_dir = self.state_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return context

    def _ready(self, server: str) -> bool:
        try:
            with urllib.request.urlopen(f"{server}/readyz", context=self._ssl_context(), timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    # -- lifecycle -----------------------------------------------------------------------------------------
    def up(self, log=lambda message: None) -> RunningControlPlane:
        """Start the control plane, or return the one already running from this state dir."""
        running = self.running()
        if running:
            return running
        self._stop_processes()
        binaries = binaries_module.resolve(build=True)
        last_error: Exception | None = None
        for _attempt in range(3):  # a picked port can be taken by someone else before we bind it
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.log_dir.mkdir(parents=True)
            try:
                return self._start(binaries, log)
            except ControlPlaneError as error:
                last_error = error
                self._stop_processes()
        raise ControlPlaneError(f"the control plane did not start: {last_error}")

    def _start(self, binaries: binaries_module.ControlPlaneBinaries, log) -> RunningControlPlane:
        started = time.monotonic()
        pki = pki_module.create(self.state_dir / "pki",
                                (self.address, *((self.service_ip,) if self.service_ip else ())))
        etcd_port, peer_port, apiserver_port = _free_port(), _free_port(), _free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn("etcd", [
            str(binaries.etcd), "--name=rightsizer", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=rightsizer={peer_url}",
            # Test data is disposable: skipping fsync makes every write an order of magnitude cheaper.
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])
        self._write_state(etcd_pid=etcd.pid)
        self._wait(lambda: self._etcd_healthy(etcd_url), etcd, "etcd")

        server = f"https://{self.address}:{apiserver_port}"
        apiserver_command = [
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}", f"--secure-port={apiserver_port}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--v=1",
            *self.extra_apiserver_args,
        ]
        apiserver = self._spawn("kube-apiserver", apiserver_command)
        self._write_state(etcd_pid=etcd.pid, apiserver_pid=apiserver.pid)
        self._wait(lambda: self._ready(server), apiserver, "kube-apiserver")

        self._write_kubeconfig(server, pki)
        version = binaries_module.version_label() if not os.environ.get("KUBEBUILDER_ASSETS") else "KUBEBUILDER_ASSETS"
        self._write_state(etcd_pid=etcd.pid, apiserver_pid=apiserver.pid, server=server,
                          kubeconfig=str(self.kubeconfig), version=version, etcd_url=etcd_url,
                          apiserver_command=apiserver_command)
        log(f"control plane ready at {server} in {time.monotonic() - started:.1f} s")
        return RunningControlPlane(self.state_dir, self.kubeconfig, server, apiserver.pid, etcd.pid, version)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log_file = open(self.log_dir / f"{name}.log", "ab")
        # A new session: the processes outlive the shell that ran `cluster up`, and a Ctrl-C there spares them.
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def _wait(self, ready, process: subprocess.Popen, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}:\n{_log_tail(self.log_dir / f'{name}.log')}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{name} was not ready after {START_TIMEOUT_SECONDS:.0f} s:\n{_log_tail(self.log_dir / f'{name}.log')}")

    @staticmethod
    def _etcd_healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return json.loads(response.read()).get("health") == "true"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _write_state(self, **state) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    def _write_kubeconfig(self, server: str, pki: pki_module.Pki) -> None:
        def encoded(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "rightsizer-local",
            "clusters": [{"name": "rightsizer-local",
                          "cluster": {"server": server, "certificate-authority-data": encoded(pki.ca_cert)}}],
            "users": [{"name": "rightsizer-admin",
                       "user": {"client-certificate-data": encoded(pki.admin_cert),
                                "client-key-data": encoded(pki.admin_key)}}],
            "contexts": [{"name": "rightsizer-local",
                          "context": {"cluster": "rightsizer-local", "user": "rightsizer-admin",
                                      "namespace": "default"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def restart_apiserver(self) -> RunningControlPlane:
        """Kill the API server (SIGKILL, as a crash) and start it again with the same flags, port and etcd: what an
        API-server outage looks like to its clients. For tests of clients that must ride one out."""
        state = json.loads(self.state_file.read_text())
        pid = state["apiserver_pid"]
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        # Its listening socket closes only when it has exited: a new one started sooner cannot bind the port.
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            self._reap(pid)
            time.sleep(0.05)
        for attempt in range(RESTART_BIND_ATTEMPTS):
            apiserver = self._spawn("kube-apiserver", state["apiserver_command"])
            try:
                self._wait(lambda: self._ready(state["server"]), apiserver, "kube-apiserver")
                break
            except ControlPlaneError as error:
                # A client retrying against the dead port can be handed that very port as its own source port (a
                # TCP self-connect, since the port is in the ephemeral range): it is freed when the client gives up.
                if "address already in use" not in str(error) or attempt == RESTART_BIND_ATTEMPTS - 1:
                    raise
                time.sleep(0.2)
        state["apiserver_pid"] = apiserver.pid
        self._write_state(**state)
        return RunningControlPlane(self.state_dir, self.kubeconfig, state["server"], apiserver.pid, state["etcd_pid"],
                                   state["version"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (etcd's v3 JSON gateway): every older resourceVersion is
        gone, so a watch resumed from one gets 410 Gone. Returns the revision."""
        etcd_url = json.loads(self.state_file.read_text())["etcd_url"]

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(f"{etcd_url}{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        revision = int(post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def down(self) -> bool:
        """Stop the processes and remove the state dir. Returns whether anything was running."""
        was_running = self._stop_processes()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return was_running

    def _stop_processes(self) -> bool:
        try:
            state = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return False
        pids = [state[key] for key in ("apiserver_pid", "etcd_pid") if key in state]
        stopped_any = False
        for pid in pids:  # the API server first, so it never runs without its storage
            if not _alive(pid):
                continue
            stopped_any = True
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while _alive(pid) and time.monotonic() < deadline:
                self._reap(pid)
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            self._reap(pid)
        return stopped_any

    @staticmethod
    def _reap(pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not our child (started by another `cluster up`): init reaps it
