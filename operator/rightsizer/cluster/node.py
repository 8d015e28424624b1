"""A single-node Kubernetes on this machine: the control plane of `controlplane.py` plus kube-controller-manager,
kube-scheduler, kube-proxy, a kubelet and containerd with runc and the CNI bridge plugin.

Everything the node adds to the host is recorded when it starts and undone by `down`: two Linux bridges (one
holding the node's address, one for the pods), the pods' network namespaces and mounts, the `kubepods` cgroups,
kube-proxy's iptables chains, and the sysctls the kubelet and the bridge plugin change. One node per machine: the
kubelet and containerd use some fixed host paths (/var/log/pods, /run/containerd, /var/lib/kubelet/device-plugins).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from rightsizer.cluster import binaries as binaries_module
from rightsizer.cluster import controlplane as controlplane_module
from rightsizer.cluster import images as images_module

NODE_NAME = "rightsizer-node"
# The API server neither proxies to a loopback kubelet nor can pods reach it there, so the node gets an address of
# its own: a /32 on an empty bridge (no dummy interfaces on every kernel), routed nowhere beyond this host.
NODE_BRIDGE, NODE_IP = "rsz-node0", "10.254.254.1"
POD_BRIDGE, POD_CIDR = "rsz-cni0", "10.254.0.0/24"
SERVICE_CIDR, KUBERNETES_SERVICE_IP = controlplane_module.SERVICE_CIDR, "10.96.0.1"
ZONE, REGION = "local-a", "local"
CLUSTER_DOMAIN = "cluster.local"
READY_TIMEOUT_SECONDS = float(os.environ.get("RIGHTSIZER_NODE_READY_TIMEOUT", "120"))
DRAIN_TIMEOUT_SECONDS = 60.0
# Host-wide: which state dir owns the node of this machine, and the runtime's socket (a unix socket path must
# stay under 108 bytes, which a state dir under pytest's tmp_path does not).
RUN_DIR = Path("/run/rightsizer-node")
# The runtime's and the kubelet's files, which hold sockets too: a short fixed path.
NODE_DIR = Path("/var/lib/rightsizer-node")
OWNER_FILE = RUN_DIR / "owner.json"

# Set by the kubelet (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables), the bridge plugin
# (ip_forward) and kube-proxy (conntrack, route_localnet): read before the node starts, restored by `down`.
SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
           "net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
           "net/netfilter/nf_conntrack_tcp_timeout_established", "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
           "net/bridge/bridge-nf-call-iptables")
# Fixed paths the kubelet, containerd and CNI create whatever their configured roots are; removed by `down`
# when they did not exist before `up`.
FIXED_PATHS = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/run/containerd",
               "/var/lib/containerd", "/opt/containerd", "/etc/cni", "/opt/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class RunningNode:
    control_plane: controlplane_module.RunningControlPlane
    kubeconfig: Path
    node_name: str
    pids: dict[str, int]
    containerd_socket: Path
    binaries_dir: Path


def _run(command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _api_client(kubeconfig: Path):
    # Not rightsizer.kube: the harness sits below the operator's modules (the import-linter layers).
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _mounts_under(prefixes: list[str]) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \\040
        if any(point == prefix or point.startswith(prefix.rstrip("/") + "/") for prefix in prefixes):
            mounts.append(point)
    return mounts


IPTABLES = ("iptables", "ip6tables")
IPTABLES_TABLES = ("filter", "nat", "mangle")


def _iptables_chains() -> dict[str, list[str]]:
    """Every chain of every table, per command: `down` removes the chains a node added (the kubelet's
    KUBE-FIREWALL, which kube-proxy's cleanup does not know, among them)."""
    chains: dict[str, list[str]] = {}
    for command in IPTABLES:
        for table in IPTABLES_TABLES:
            out = _run([f"{command}-save", "-t", table], check=False).stdout
            chains[f"{command} {table}"] = [line[1:].split()[0] for line in out.splitlines() if line.startswith(":")]
    return chains


def _remove_new_chains(before: dict[str, list[str]]) -> None:
    for key, chains in _iptables_chains().items():
        added = set(chains) - set(before.get(key, chains))
        if not added:
            continue
        command, table = key.split()
        out = _run([f"{command}-save", "-t", table], check=False).stdout
        for line in out.splitlines():  # rules that jump to an added chain, from chains that stay
            words = shlex.split(line)
            if words[:1] == ["-A"] and words[1] not in added and "-j" in words and words[words.index("-j") + 1] in added:
                _run([command, "-t", table, "-D", *words[1:]], check=False)
        for chain in added:
            _run([command, "-t", table, "-F", chain], check=False)
        for chain in added:
            _run([command, "-t", table, "-X", chain], check=False)


def _kubepods_cgroups() -> list[Path]:
    return [path for path in CGROUP_ROOT.glob("*/kubepods*") if path.is_dir()]


def _pids_in_cgroups(roots: list[Path]) -> set[int]:
    pids: set[int] = set()
    for root in roots:
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(pid) for pid in procs.read_text().split())
            except OSError:
                pass
    return pids


def _remove_cgroup_tree(root: Path) -> None:
    # cgroupfs directories are removed with rmdir, deepest first; files inside them cannot be unlinked.
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass


class Node:
    def __init__(self, state_dir: Path | None = None):
        pki = Path(state_dir or controlplane_module.default_state_dir()) / "pki"
        self.control_plane = controlplane_module.ControlPlane(
            state_dir, address=NODE_IP, service_ip=KUBERNETES_SERVICE_IP,
            extra_apiserver_args=(
                # Reach the kubelet at the node's InternalIP, not at its hostname (which resolves to loopback here).
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                # logs, exec and the kubelet's APIs through the API server: the kubelet admits the CA's clients.
                f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
            ))
        self.state_dir = self.control_plane.state_dir
        self.node_dir = NODE_DIR
        self.state_file = self.state_dir / "node.json"
        self.log_dir = self.control_plane.log_dir
        self.socket = RUN_DIR / "containerd.sock"

    # -- queries -------------------------------------------------------------------------------------------
    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> RunningNode | None:
        state = self._state()
        control_plane = self.control_plane.running()
        if not state or not control_plane or "pids" not in state:
            return None
        if not all(controlplane_module._alive(pid) for pid in state["pids"].values()):
            return None
        if not self._node_ready(control_plane.kubeconfig):
            return None
        return RunningNode(control_plane, control_plane.kubeconfig, NODE_NAME, state["pids"], self.socket,
                           Path(state["binaries"]))

    @staticmethod
    def _node_ready(kubeconfig: Path) -> bool:
        from kubernetes import client

        try:
            with _api_client(kubeconfig) as api:
                node = client.CoreV1Api(api).read_node(NODE_NAME, _request_timeout=5)
        except Exception:  # noqa: BLE001 - not registered yet, or the API server not answering: not ready
            return False
        return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))

    # -- lifecycle -----------------------------------------------------------------------------------------
    def up(self, log=lambda message: None) -> RunningNode:
        """Start the node (and its control plane), or return the one already running from this state dir."""
        running = self.running()
        if running:
            return running
        self._check_owner()
        binaries = binaries_module.build_node(build=True, log=log)
        pause = images_module.pause_image(log=log)
        self.down()  # whatever a failed or killed earlier start left behind
        started = time.monotonic()
        host = {
            "sysctls": {name: _read_sysctl(name) for name in SYSCTLS},
            "existing_paths": [path for path in FIXED_PATHS if os.path.lexists(path)],
            "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
            "iptables": _iptables_chains(),
        }
        # Written outside the state dir first: the control plane starts from an empty state dir.
        owner = {"state_dir": str(self.state_dir), "host": host}
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(json.dumps(owner, indent=2))
        try:
            self._network_up()
            control_plane = self.control_plane.up(log=log)
            self.node_dir.mkdir(parents=True, exist_ok=True)
            pids: dict[str, int] = {}
            self._write_state(host, binaries, pids)
            pids["containerd"] = self._start_containerd(binaries)
            self._write_state(host, binaries, pids)
            images_module.load(binaries["ctr"], self.socket, pause)
            kubeconfig = str(control_plane.kubeconfig)
            pki = self.state_dir / "pki"
            pids["kube-controller-manager"] = self._spawn("kube-controller-manager", [
                str(binaries["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                # No signing CA key is handed over, so the CSR signer would only log errors.
                "--controllers=*,-csrsigning", "--leader-elect=false", "--bind-address=127.0.0.1",
                "--secure-port=0", f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=1"])
            pids["kube-scheduler"] = self._spawn("kube-scheduler", [
                str(binaries["kube-scheduler"]), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
                "--bind-address=127.0.0.1", "--secure-port=0", "--v=1"])
            self._write_state(host, binaries, pids)
            pids["coredns"] = self._start_coredns(binaries, control_plane)
            self._write_state(host, binaries, pids)
            pids["kubelet"] = self._start_kubelet(binaries, control_plane)
            self._write_state(host, binaries, pids)
            pids["kube-proxy"] = self._start_kube_proxy(binaries, control_plane)
            self._write_state(host, binaries, pids)
            self._wait_ready(control_plane, pids)
        except BaseException:
            self.down()
            raise
        log(f"node {NODE_NAME} Ready at {NODE_IP} in {time.monotonic() - started:.1f} s "
            f"(kubeconfig {control_plane.kubeconfig})")
        return RunningNode(control_plane, control_plane.kubeconfig, NODE_NAME, pids, self.socket, binaries.directory)

    def _check_owner(self) -> None:
        try:
            owner = json.loads(OWNER_FILE.read_text())
        except (FileNotFoundError, ValueError):
            return
        if Path(owner["state_dir"]) != self.state_dir and Path(owner["state_dir"]).exists():
            raise NodeError(f"a node of {owner['state_dir']} holds this machine (one node per machine): run "
                            f"`rightsizer cluster down --state-dir {owner['state_dir']}` first")

    def _write_state(self, host: dict, binaries: binaries_module.NodeBinaries, pids: dict[str, int]) -> None:
        self.state_file.write_text(json.dumps({"host": host, "binaries": str(binaries.directory), "pids": pids},
                                              indent=2))

    def _spawn(self, name: str, command: list[str], env: dict | None = None) -> int:
        log_file = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
        log_file.close()
        return process.pid

    def _network_up(self) -> None:
        if not _link_exists(NODE_BRIDGE):
            _run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_BRIDGE])
        _run(["ip", "link", "set", NODE_BRIDGE, "up"])

    def _start_containerd(self, binaries: binaries_module.NodeBinaries) -> int:
        directory = self.node_dir / "containerd"
        cni_dir = self.node_dir / "cni"
        (cni_dir / "net.d").mkdir(parents=True, exist_ok=True)
        (cni_dir / "net.d" / "10-rightsizer.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "rightsizer",
            "plugins": [{"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni_dir / "ipam")}}],
        }, indent=2))
        config = directory / "config.toml"
        directory.mkdir(parents=True, exist_ok=True)
        config.write_text(images_module.CONTAINERD_CONFIG.format(
            root=directory / "root", state=directory / "state", socket=self.socket, runc=binaries.runc,
            cni_bin=binaries.cni_bin_dir, cni_conf=cni_dir / "net.d", sandbox=images_module.PAUSE_REF))
        env = dict(os.environ, PATH=f"{binaries.directory}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        pid = self._spawn("containerd", [str(binaries["containerd"]), f"--config={config}"], env=env)
        self._wait(lambda: _run([str(binaries["ctr"]), "--address", str(self.socket), "version"],
                                check=False).returncode == 0, pid, "containerd")
        return pid

    def _start_kubelet(self, binaries: binaries_module.NodeBinaries,
                       control_plane: controlplane_module.RunningControlPlane) -> int:
        directory = self.node_dir / "kubelet"
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            # Hosts with cgroup v1 only (this project's CI machines among them): kubelet 1.35+ refuses them unless
            # told otherwise (KEP-5573); it still runs, with a deprecation warning Event.
            "failCgroupV1": False,
            "failSwapOn": False,
            # kube-proxy owns the node's iptables rules; the kubelet's own chains would be left behind.
            "makeIPTablesUtilChains": False,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.state_dir / "pki" / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            # A development machine's disk is rarely 85 % free: evict and collect images only when really short.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                             "nodefs.inodesFree": "2%"},
            "imageGCHighThresholdPercent": 99, "imageGCLowThresholdPercent": 98,
            "clusterDNS": [NODE_IP], "clusterDomain": CLUSTER_DOMAIN,
            "registerNode": True, "serializeImagePulls": False, "resolvConf": "/etc/resolv.conf",
            "shutdownGracePeriod": "0s",
        }
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        cpus, memory_gib = os.cpu_count() or 1, round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
        labels = {"node.kubernetes.io/instance-type": f"local-{cpus}cpu-{memory_gib}gi",
                  "topology.kubernetes.io/zone": ZONE, "topology.kubernetes.io/region": REGION}
        env = dict(os.environ, PATH=f"{binaries.directory}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        return self._spawn("kubelet", [
            str(binaries["kubelet"]), f"--config={directory / 'config.yaml'}",
            f"--kubeconfig={control_plane.kubeconfig}", f"--root-dir={directory / 'root'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--node-labels={','.join(f'{key}={value}' for key, value in labels.items())}", "--v=1"], env=env)

    def _start_coredns(self, binaries: binaries_module.NodeBinaries,
                       control_plane: controlplane_module.RunningControlPlane) -> int:
        # Cluster DNS on the node's address, as kubeadm's CoreDNS answers (the Service and Pod records of the
        # kubernetes plugin), other names forwarded to this host's resolvers.
        corefile = self.node_dir / "Corefile"
        corefile.write_text(f"""\
.:53 {{
    bind {NODE_IP}
    errors
    cache 30
    loop
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {control_plane.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
}}
""")
        pid = self._spawn("coredns", [str(binaries["coredns"]), "-conf", str(corefile)])
        self._wait(self._dns_answers, pid, "coredns")
        return pid

    @staticmethod
    def _dns_answers() -> bool:
        import socket

        # An A query for the API server's Service name: answered once the kubernetes plugin has synced.
        name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                 + b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00\x00\x01\x00\x01")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.sendto(query, (NODE_IP, 53))
                answer = sock.recv(512)
            except OSError:
                return False
        return len(answer) > 12 and answer[3] & 0x0F == 0 and int.from_bytes(answer[6:8], "big") > 0

    def _start_kube_proxy(self, binaries: binaries_module.NodeBinaries,
                          control_plane: controlplane_module.RunningControlPlane) -> int:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(control_plane.kubeconfig)},
            "hostnameOverride": NODE_NAME, "mode": "iptables", "clusterCIDR": POD_CIDR,
            "bindAddress": NODE_IP, "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
            # Zero leaves the host's conntrack table size and timeouts as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            # NodePorts on 127.0.0.1 would need route_localnet=1 on every interface.
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": [f"{NODE_IP}/32"],
        }
        path = self.node_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return self._spawn("kube-proxy", [str(binaries["kube-proxy"]), f"--config={path}", "--v=1"])

    def _wait(self, ready, pid: int, name: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not controlplane_module._alive(pid):
                raise NodeError(f"{name} exited:\n{controlplane_module._log_tail(self.log_dir / f'{name}.log')}")
            if ready():
                return
            time.sleep(0.2)
        raise NodeError(f"{name} was not ready after {timeout:.0f} s:\n"
                        f"{controlplane_module._log_tail(self.log_dir / f'{name}.log')}")

    def _wait_ready(self, control_plane: controlplane_module.RunningControlPlane, pids: dict[str, int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for name, pid in pids.items():
                if not controlplane_module._alive(pid):
                    raise NodeError(f"{name} exited:\n{controlplane_module._log_tail(self.log_dir / f'{name}.log')}")
            if self._node_ready(control_plane.kubeconfig):
                return
            time.sleep(0.3)
        raise NodeError(f"node {NODE_NAME} not Ready after {READY_TIMEOUT_SECONDS:.0f} s:\n"
                        f"{controlplane_module._log_tail(self.log_dir / 'kubelet.log')}")

    # -- teardown ------------------------------------------------------------------------------------------
    def down(self, log=lambda message: None) -> bool:
        """Stop everything, restore the host and remove the state dir. Returns whether a node was there."""
        state = self._state()
        try:
            owner = json.loads(OWNER_FILE.read_text())
        except (FileNotFoundError, ValueError):
            owner = None
        if owner and Path(owner["state_dir"]) != self.state_dir:
            owner = None  # another state dir's node: not ours to undo
        if state is None and owner is None:
            return self.control_plane.down()
        host = (state or {}).get("host") or owner["host"]
        pids = (state or {}).get("pids", {})
        binaries_dir = Path((state or {}).get("binaries") or binaries_module.node_cache_dir())
        started = time.monotonic()
        # No controller may replace what is deleted next.
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._stop(pids.get(name))
        self._delete_pods(pids, log)
        log(f"pods deleted after {time.monotonic() - started:.1f} s")
        for name in ("kubelet", "kube-proxy", "coredns"):
            self._stop(pids.get(name))
        log(f"kubelet and kube-proxy stopped after {time.monotonic() - started:.1f} s")
        if (binaries_dir / "kube-proxy").exists():
            # kube-proxy's own cleanup removes its chains from iptables and ip6tables.
            _run([str(binaries_dir / "kube-proxy"), "--cleanup", "--v=0"], check=False)
        if "iptables" in host:
            _remove_new_chains(host["iptables"])
        # Whatever still runs in a pod's cgroup (a container the kubelet had no time to stop) is ours to end.
        for _ in range(3):
            for pid in _pids_in_cgroups(_kubepods_cgroups()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        self._stop(pids.get("containerd"))
        self._kill_shims(binaries_dir)
        log(f"containerd stopped after {time.monotonic() - started:.1f} s")
        # Before the node's bridge goes: the API server calls itself at the node's address while it shuts down.
        self.control_plane.down()
        log(f"control plane stopped after {time.monotonic() - started:.1f} s")
        for point in sorted(_mounts_under([str(self.state_dir), str(NODE_DIR), "/run/containerd", "/var/lib/kubelet",
                                            "/run/netns"]), key=len, reverse=True):
            if point.startswith("/run/netns") and os.path.basename(point) in host.get("netns", []):
                continue
            if _run(["umount", point], check=False).returncode != 0:
                _run(["umount", "-l", point], check=False)
        for name in (sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []):
            if name.startswith("cni-") and name not in host.get("netns", []):
                _run(["ip", "netns", "delete", name], check=False)
        for link in (POD_BRIDGE, NODE_BRIDGE):
            if _link_exists(link):
                _run(["ip", "link", "delete", link], check=False)
        for root in _kubepods_cgroups():
            _remove_cgroup_tree(root)
        for name, value in host.get("sysctls", {}).items():
            if value is not None and _read_sysctl(name) != value:
                try:
                    (Path("/proc/sys") / name).write_text(value)
                except OSError:
                    pass
        for path in FIXED_PATHS:
            if path not in host.get("existing_paths", []) and os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(NODE_DIR, ignore_errors=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        return True

    def _delete_pods(self, pids: dict[str, int], log) -> None:
        """Force-delete every pod while the kubelet still runs, so that it stops them through the runtime (which
        tears down their network namespaces with the CNI plugin), and wait for the runtime to be empty."""
        control_plane = self.control_plane.running()
        kubelet, containerd = pids.get("kubelet"), pids.get("containerd")
        if not (control_plane and kubelet and containerd and controlplane_module._alive(kubelet)):
            return
        from kubernetes import client

        binaries_dir = Path(self._state()["binaries"])
        try:
            with _api_client(control_plane.kubeconfig) as api:
                core = client.CoreV1Api(api)
                for pod in core.list_pod_for_all_namespaces(_request_timeout=10).items:
                    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                                               _request_timeout=10)
        except Exception as error:  # noqa: BLE001 - the sweep below still cleans up
            log(f"deleting pods: {error}")
            return
        # Stopping a pod's sandbox is when the runtime removes its network; the stopped containers themselves are
        # the kubelet's garbage until its next collection, so only running tasks count.
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            listed = _run([str(binaries_dir / "ctr"), "--address", str(self.socket), "-n", "k8s.io", "tasks",
                           "list"], check=False)
            if listed.returncode != 0 or not any(line.split()[2:3] == ["RUNNING"]
                                                 for line in listed.stdout.splitlines()[1:]):
                return
            time.sleep(0.5)
        log("the kubelet did not stop every container in time; killing what is left")

    @staticmethod
    def _stop(pid: int | None, timeout: float = 15.0) -> None:
        if not pid or not controlplane_module._alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while controlplane_module._alive(pid) and time.monotonic() < deadline:
            controlplane_module.ControlPlane._reap(pid)
            time.sleep(0.1)
        if controlplane_module._alive(pid):
            os.kill(pid, signal.SIGKILL)
        controlplane_module.ControlPlane._reap(pid)

    @staticmethod
    def _kill_shims(binaries_dir: Path) -> None:
        shim = str(binaries_dir / "containerd-shim-runc-v2")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "exe") == shim:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass
