"""The autouse guard of conftest.py: a test's connection to anything but loopback fails before it is attempted."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from conftest import NetworkRefused, _guarded, allowed_address


def test_a_connection_outside_loopback_fails_before_it_is_attempted():
    attempted = []
    connect = _guarded(lambda sock, address: attempted.append(address))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkRefused, match="10.255.255.1"):
            connect(sock, ("10.255.255.1", 9))
    assert attempted == []  # refused by the guard, not by the network


def test_the_guard_is_installed_for_every_connection_path():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        with pytest.raises(NetworkRefused):
            sock.connect(("10.255.255.1", 9))
        with pytest.raises(NetworkRefused):
            sock.connect_ex(("169.254.169.254", 80))  # the instance-metadata address
    with pytest.raises(NetworkRefused):
        socket.create_connection(("10.255.255.1", 9), timeout=0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkRefused):
            sock.connect(("example.com", 80))  # refused by name, before any lookup

    async def open_connection():
        await asyncio.open_connection("10.255.255.1", 9)

    with pytest.raises(NetworkRefused):
        asyncio.run(asyncio.wait_for(open_connection(), timeout=2))


def test_loopback_connections_pass():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=2).close()
    assert allowed_address("127.0.0.1") and allowed_address("127.8.9.10") and allowed_address("::1")
    assert allowed_address("localhost") and allowed_address("::ffff:127.0.0.1")
    assert not allowed_address("10.255.255.1") and not allowed_address("::ffff:10.0.0.1")
    assert not allowed_address("169.254.169.254") and not allowed_address("fe80::1%eth0")
    # The harness's own node, Pods and Services, and nothing next to them.
    assert allowed_address("10.254.254.1") and allowed_address("10.254.0.17") and allowed_address("10.96.0.1")
    assert not allowed_address("10.254.254.2") and not allowed_address("10.254.1.1")


def test_boto3_never_probes_the_instance_metadata_service():
    assert os.environ.get("AWS_EC2_METADATA_DISABLED") == "true"
    import botocore.session

    # With the variable set, the chain's instance-metadata provider answers nothing without a request (a request
    # would raise NetworkRefused here).
    resolver = botocore.session.Session().get_component("credential_provider")
    instance_metadata = next(p for p in resolver.providers if p.METHOD == "iam-role")
    assert instance_metadata.load() is None
