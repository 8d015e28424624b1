"""`rightsizer` command line: argument parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rightsizer import schema


def _cluster(args: argparse.Namespace) -> int:
    from rightsizer.cluster import binaries
    from rightsizer.cluster.controlplane import ControlPlane

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    control_plane = ControlPlane(args.state_dir)
    if args.cluster_command in ("up", "down", "status", "image") and (args.node or args.cluster_command == "down"):
        from rightsizer.cluster.node import Node

        node = Node(args.state_dir)
        if args.cluster_command == "down":
            stopped = node.down(log=log)
            print("stopped" if stopped else "nothing was running", file=sys.stderr)
            return 0
        if args.cluster_command == "status":
            running_node = node.running()
            if not running_node:
                print("no node running", file=sys.stderr)
                return 1
            print(json.dumps({"server": running_node.control_plane.server, "kubeconfig": str(running_node.kubeconfig),
                              "node": running_node.node_name, "pids": running_node.pids}, indent=2))
            return 0
    if args.cluster_command == "image":
        from rightsizer.cluster import images
        from rightsizer.cluster.node import Node

        tarball = images.project_image(Path(args.repo).resolve(), log=log)
        running_node = Node(args.state_dir).running()
        if running_node:
            images.load(running_node.binaries_dir / "ctr", running_node.containerd_socket, tarball)
            log(f"loaded {images.PROJECT_REF} into node {running_node.node_name}")
        print(tarball)
    elif args.cluster_command == "up":
        if args.node:
            running = node.up(log=log).control_plane
        else:
            running = control_plane.up(log=log)
        if args.install_crds:
            from rightsizer import kube

            kube.install_crds(kube.api_client(running.kubeconfig))
        print(running.kubeconfig)
    elif args.cluster_command == "status":
        running = control_plane.running()
        if not running:
            print("not running", file=sys.stderr)
            return 1
        print(json.dumps({"server": running.server, "kubeconfig": str(running.kubeconfig),
                          "version": running.version}, indent=2))
    elif args.cluster_command == "build":
        built = binaries.resolve(build=True)
        paths = {"kube-apiserver": str(built.kube_apiserver), "etcd": str(built.etcd),
                 "kustomize": str(binaries.kustomize(build=True))}
        if args.node:
            from rightsizer.cluster import images

            node_binaries = binaries.build_node(build=True, log=log)
            paths.update({name: str(node_binaries[name])
                          for name in binaries.KUBERNETES_NODE_COMMANDS + binaries.CONTAINERD_COMMANDS})
            paths["pause-image"] = str(images.pause_image(log=log))
        print(json.dumps(paths, indent=2))
    return 0


def _operator(args: argparse.Namespace) -> int:
    import kopf

    import prometheus_client

    import rightsizer.handlers  # noqa: F401  (registers the handlers with kopf)

    # JSON logs carry the RightsizeJob's namespace and name on every per-object line (kopf's "object" field).
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    kopf.run(
        standalone=args.standalone,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from rightsizer import spec as spec_module
    from rightsizer.backends import registry

    failed = False
    for path in args.files:
        try:
            documents = schema.read_jobs(path)
        except schema.ManifestError as error:  # one file's problem: the others are still checked
            print(f"{error}")
            failed = True
            continue
        for document in documents:
            name = document["metadata"].get("name", "?")
            try:
                validated = registry.validate_file(document.get("spec") or {})
            except spec_module.InvalidSpec as invalid:
                failed = True
                for error in invalid.errors:
                    print(f"{path}: {name}: error: {error}")
                continue
            parsed = validated.spec
            for warning in validated.warnings:
                print(f"{path}: {name}: warning: {warning}")
            print(f"{path}: {name}: ok ({validated.policy.describe_job(parsed)})")
    return 1 if failed else 0


def _render(args: argparse.Namespace) -> int:
    from rightsizer import spec as spec_module
    from rightsizer.backends import registry
    from rightsizer.backends.sagemaker import translate
    from rightsizer.model import Owner

    requests = []
    for document in schema.read_jobs(args.file):
        metadata = document["metadata"]
        owner = Owner(metadata.get("namespace", "default"), metadata.get("name", "unnamed"),
                      metadata.get("uid", args.uid))
        try:
            validated = registry.validate_file(document.get("spec") or {})
            parsed = validated.spec
            if parsed.backend != "sagemaker":
                print(f"{args.file}: {owner.name}: backend {parsed.backend} sends no SageMaker request", file=sys.stderr)
                continue
            if parsed.baseline is not None:
                # The target's endpoint is read from the cluster at submission: the file does not say it.
                print(f"{args.file}: {owner.name}: note: spec.baseline adds the SageMaker endpoint of "
                      f"spec.promotion.target to InputConfig.Endpoints when the operator submits the job",
                      file=sys.stderr)
            requests.append(translate.build_request(parsed, owner, metadata.get("generation", 1)))
        except (spec_module.InvalidSpec, translate.RequestInvalid) as invalid:
            for error in invalid.errors:
                print(f"{args.file}: {owner.name}: error: {error}", file=sys.stderr)
            return 1
    print(json.dumps(requests[0] if len(requests) == 1 else requests, indent=2, default=str))
    return 0


def _docs(args: argparse.Namespace) -> int:
    from rightsizer.tools import apidocs

    text = apidocs.render()
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date with the CRD: run `rightsizer docs`", file=sys.stderr)
            return 1
        return 0
    Path(args.output).write_text(text)
    return 0


def _example(args: argparse.Namespace) -> int:
    from rightsizer.reference import fraud_model

    example = fraud_model.write_example(args.directory, trees=args.trees)
    print(json.dumps({"model": str(example.model), "payload": str(example.payload),
                      "payloadRow": str(example.payload_row), "metadata": str(example.metadata),
                      "rocAuc": round(example.roc_auc, 5), "aucPr": round(example.auc_pr, 4)}, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from rightsizer.tools import run as local_run

    # Nothing of `run` is meant for a cloud: boto3's credential chain must not probe the instance-metadata address.
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    return local_run.run_file(args.file, name=args.name, report_path=args.report, time_scale=args.time_scale)


def _demo(args: argparse.Namespace) -> int:
    from rightsizer.tools import demo

    return demo.run()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="rightsizer", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    operator = commands.add_parser("operator", help="run the operator (kopf) against the current kubeconfig")
    operator.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    operator.add_argument("--standalone", action="store_true", help="no peering with other operator replicas")
    operator.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    operator.add_argument("--verbose", action="store_true")
    operator.add_argument("--log-format", choices=["plain", "full", "json"], default="plain")
    operator.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)")
    operator.set_defaults(run=_operator)

    cluster = commands.add_parser(
        "cluster", help="a local kube-apiserver + etcd on 127.0.0.1, or with --node a whole single-node cluster")
    cluster.add_argument("cluster_command", choices=["up", "down", "status", "build", "image"],
                         help="image: build localhost/rightsizer:dev from the Dockerfile on a local Debian base "
                              "(buildah) and load it into the running node")
    cluster.add_argument("--node", action="store_true",
                         help="with build, up, status: also a kubelet, containerd, kube-proxy, scheduler and "
                              "controller-manager (needs root)")
    cluster.add_argument("--repo", default=".", help="with image: the repository holding the Dockerfile")
    cluster.add_argument("--state-dir", type=Path, default=None,
                         help="where keys, data, logs and the kubeconfig live (default ~/.local/state/rightsizer/cluster)")
    cluster.add_argument("--install-crds", action="store_true", help="with up: install the RightsizeJob CRD")
    cluster.set_defaults(run=_cluster)

    validate = commands.add_parser("validate", help="check RightsizeJob manifests offline (semantic rules)")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(run=_validate)

    render = commands.add_parser(
        "render", help="print the create_inference_recommendations_job request a RightsizeJob makes (no AWS call)")
    render.add_argument("file")
    render.add_argument("--uid", default="00000000-0000-0000-0000-000000000000",
                        help="the uid to hash into the job name when the manifest has none (a real one is assigned "
                             "by the API server)")
    render.set_defaults(run=_render)

    example = commands.add_parser("example", help="make the reference model and payloads (no download)")
    example.add_argument("what", choices=["fraud-model"])
    example.add_argument("directory", type=Path)
    example.add_argument("--trees", type=int, default=300)
    example.set_defaults(run=_example)

    run = commands.add_parser("run", help="run a backend: local RightsizeJob on this machine, without a cluster")
    run.add_argument("file")
    run.add_argument("--name", help="which RightsizeJob of the file (default: the first with backend: local)")
    run.add_argument("--report", type=Path, help="also write an HTML report with charts here")
    run.add_argument("--time-scale", type=float, default=1.0,
                     help="multiply the traffic pattern's durations (0.1: a ten times shorter run)")
    run.set_defaults(run=_run)

    demo = commands.add_parser("demo", help="the reference use case end to end: cluster, operator, local job")
    demo.set_defaults(run=_demo)

    docs = commands.add_parser("docs", help="generate the API reference from the CRD schema")
    docs.add_argument("--output", default="docs/api-reference.md")
    docs.add_argument("--check", action="store_true", help="fail when the file differs from the CRD")
    docs.set_defaults(run=_docs)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except schema.ManifestError as error:  # a file a person must fix: one line, not a traceback
        print(f"rightsizer {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
