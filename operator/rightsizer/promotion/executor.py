"""Carries out promotion actions against the API server: reads, server-side applies (field manager
`rightsizer`), deletes. Target kinds are only known at run time, so this uses the dynamic client; every call
goes through `_resource`, which holds the operator to the kinds its ClusterRole grants (PERMISSIONS) plus the
spec's own generic target, whose rules the user grants (README: Promotion)."""

from __future__ import annotations

import threading
from typing import Any, Mapping

from kubernetes import client, dynamic
from kubernetes.dynamic import exceptions as dynamic_errors

from rightsizer import kube
from rightsizer.promotion.objects import (FIELD_MANAGER, ApplyObjects, ApplyResult, DeleteObjects, DeleteResult,
                                          ObjectRef, ReadWorld, World)

ACK, KSERVE = "sagemaker.services.k8s.aws", "serving.kserve.io"
# ACK's Application Auto Scaling controller: an ACK Endpoint's variant is registered through its objects.
ACK_AAS = "applicationautoscaling.services.k8s.aws"
# (group, plural) -> verbs: exactly what promotion does to the kinds it knows (manifests/rbac/role.yaml grants
# these; tests/test_rbac.py checks the two agree).
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    (ACK, "endpoints"): frozenset({"get", "patch"}),
    # A server-side apply that creates an object is authorized as create as well as patch.
    (ACK, "endpointconfigs"): frozenset({"list", "create", "patch", "delete"}),
    (ACK, "models"): frozenset({"list", "create", "patch", "delete"}),
    (KSERVE, "inferenceservices"): frozenset({"get", "patch"}),
    # status.best.scaling on an ACK Endpoint: listed to find the variant's registrations, applied to register it,
    # deleted to deregister it (README: Promotion).
    (ACK_AAS, "scalabletargets"): frozenset({"list", "create", "patch", "delete"}),
    (ACK_AAS, "scalingpolicies"): frozenset({"list", "create", "patch", "delete"}),
}
GENERIC_TARGET_VERBS = frozenset({"get", "patch"})

_clients: dict[int, dynamic.DynamicClient] = {}
_clients_guard = threading.Lock()
# The dynamic client's discovery cache is shared and not thread-safe (kopf runs handlers in several threads).
_discovery_lock = threading.Lock()


class NotPermitted(Exception):
    """A call outside what the operator's role grants: a bug in the flow, never sent to the API server."""


def _dynamic(api: client.ApiClient) -> dynamic.DynamicClient:
    with _clients_guard:
        if id(api) not in _clients:
            _clients[id(api)] = dynamic.DynamicClient(api)
        return _clients[id(api)]


class Executor:
    def __init__(self, api: client.ApiClient, generic_target: tuple[str, str] | None):
        """`generic_target` is the (apiVersion, kind) of a spec.promotion target outside PERMISSIONS."""
        self.api = _dynamic(api)
        self.generic_target = generic_target

    def _resource(self, api_version: str, kind: str, verb: str):
        resource = self._discover(api_version, kind)
        group = api_version.split("/")[0] if "/" in api_version else ""
        allowed = PERMISSIONS.get((group, resource.name))
        if allowed is None and (api_version, kind) == self.generic_target:
            allowed = GENERIC_TARGET_VERBS
        if allowed is None or verb not in allowed:
            raise NotPermitted(f"{verb} {resource.name}.{group} is not part of promotion")
        return resource

    def _discover(self, api_version: str, kind: str):
        with _discovery_lock:
            try:
                return self.api.resources.get(api_version=api_version, kind=kind)
            except dynamic_errors.ResourceNotFoundError:
                # The CRD may have been installed since discovery was cached.
                self.api.resources.invalidate_cache()
                return self.api.resources.get(api_version=api_version, kind=kind)

    def read(self, action: ReadWorld) -> World:
        objects: dict[ObjectRef, Mapping[str, Any] | None] = {}
        listings = {}
        unserved: set[tuple[str, str]] = set()
        try:
            for ref in action.objects:
                try:
                    resource = self._resource(ref.api_version, ref.kind, "get")
                    objects[ref] = resource.get(name=ref.name, namespace=ref.namespace).to_dict()
                except dynamic_errors.NotFoundError:
                    objects[ref] = None
                except dynamic_errors.ResourceNotFoundError:
                    unserved.add((ref.api_version, ref.kind))
                    objects[ref] = None
            for kinds in action.listings:
                try:
                    resource = self._resource(kinds.api_version, kinds.kind, "list")
                    listings[kinds] = tuple(item.to_dict() for item in
                                            resource.get(namespace=kinds.namespace).items)
                except dynamic_errors.ResourceNotFoundError:
                    unserved.add((kinds.api_version, kinds.kind))
                    listings[kinds] = ()
            conflict = self._probe(action) if all(o is not None for o in objects.values()) else None
        except dynamic_errors.ForbiddenError as error:
            return World(objects, listings, frozenset(unserved), error=kube.api_message(error), forbidden=True)
        except dynamic_errors.DynamicApiError as error:
            return World(objects, listings, frozenset(unserved), error=kube.api_message(error))
        return World(objects, listings, frozenset(unserved), conflict=conflict)

    def _probe(self, action: ReadWorld) -> str | None:
        for body, ref in zip(action.probes, ApplyObjects(action.probes).refs()):
            try:
                self._resource(ref.api_version, ref.kind, "patch").server_side_apply(
                    body=dict(body), name=ref.name, namespace=ref.namespace, field_manager=FIELD_MANAGER,
                    force_conflicts=action.force_conflicts, dry_run="All")
            except dynamic_errors.ConflictError as error:
                return kube.api_message(error)
        return None

    def apply(self, action: ApplyObjects) -> ApplyResult:
        applied: list[ObjectRef] = []
        for body, ref in zip(action.bodies, action.refs()):
            try:
                resource = self._resource(ref.api_version, ref.kind, "patch")
                resource.server_side_apply(body=dict(body), name=ref.name, namespace=ref.namespace,
                                           field_manager=FIELD_MANAGER, force_conflicts=action.force_conflicts)
            except dynamic_errors.ConflictError as error:
                return ApplyResult(tuple(applied), conflict=kube.api_message(error))
            except dynamic_errors.ForbiddenError as error:
                return ApplyResult(tuple(applied), error=kube.api_message(error), forbidden=True)
            except dynamic_errors.ResourceNotFoundError as error:
                return ApplyResult(tuple(applied), error=f"{ref.kind} in {ref.api_version} is not served: {error}")
            except dynamic_errors.DynamicApiError as error:
                return ApplyResult(tuple(applied), error=kube.api_message(error))
            applied.append(ref)
        return ApplyResult(tuple(applied))

    def delete(self, action: DeleteObjects) -> DeleteResult:
        deleted: list[ObjectRef] = []
        for ref in action.refs:
            try:
                self._resource(ref.api_version, ref.kind, "delete").delete(name=ref.name, namespace=ref.namespace)
            except dynamic_errors.NotFoundError:
                pass  # already gone: what the delete wanted
            except dynamic_errors.DynamicApiError as error:
                return DeleteResult(tuple(deleted), error=f"{ref.describe()}: {kube.api_message(error)}")
            deleted.append(ref)
        return DeleteResult(tuple(deleted))
