"""An API server that is away (connection refused, 5xx, 429) makes the handler fail with kopf's TemporaryError,
which kopf logs in one line, instead of a raw exception logged with its 60-line urllib3 traceback."""

from __future__ import annotations

import socket

import kopf
import pytest
import yaml
from kubernetes import client

from rightsizer import handlers

BODY = kopf.Body({"apiVersion": "rightsizer.io/v1alpha1", "kind": "RightsizeJob",
                  "metadata": {"namespace": "ml", "name": "fraud", "uid": "uid-outage"}, "spec": {}})


@pytest.fixture
def unreachable_api_server(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return port


def test_a_refused_connection_is_a_one_line_temporary_error(unreachable_api_server):
    with pytest.raises(kopf.TemporaryError) as raised:
        handlers.drive(BODY)
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and len(message) < 300, message
    assert message.startswith("the API server did not answer (") and "Connection refused" in message
    assert " object at 0x" not in message


@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_overloaded_or_failing_api_server_is_temporary(monkeypatch, status):
    def unavailable(body, patch):
        raise client.ApiException(status=status, reason="Service Unavailable")

    # A first visit starts from kopf's body: its first request is the status write.
    monkeypatch.setattr(handlers, "_write_status", unavailable)
    with pytest.raises(kopf.TemporaryError, match=rf"^the API server did not answer \({status} Service Unavailable\)"):
        handlers.drive(BODY)


def test_a_refusal_of_the_request_itself_is_not_hidden(monkeypatch):
    def forbidden(body, patch):
        raise client.ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(handlers, "_write_status", forbidden)
    with pytest.raises(client.ApiException):  # a lasting problem keeps its full report
        handlers.drive(BODY)
