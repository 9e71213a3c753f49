"""Fixtures of the scale tests: a local S3 endpoint (a moto server on 127.0.0.1, one per test
session) and a small local Ray cluster (one per test module that asks for it).

Nothing leaves the machine: the S3 endpoint listens on 127.0.0.1, every store is given its
endpoint and dummy keys explicitly as ``storage_options``, and Ray runs in this machine's
processes only (no dashboard).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (started once, stopped at the end)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per S3 request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_options(s3_endpoint: str) -> dict[str, str]:
    """Lance storage options for the local endpoint (dummy credentials)."""
    return {
        "aws_endpoint": s3_endpoint,
        "allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


@pytest.fixture
def s3_uri(s3_endpoint: str) -> str:
    """``s3://<fresh bucket>/db``: an empty store location per test."""
    import boto3

    bucket = f"actstore-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/db"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray with 2 CPUs for the module's tests (Ray starts in seconds: once per module)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
