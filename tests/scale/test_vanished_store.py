"""A store on S3 whose bucket vanished (issue 22, item 4): ``info``, ``verify`` and ``import``
are one ``error:`` line naming the store and what the object store answered, and a server
that outlives its bucket answers NOT_FOUND, never "Unexpected error."."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto")  # in [dev]: CI has it
pytest.importorskip("boto3")  # in [dev]: CI has it

from actstore import Store  # noqa: E402
from actstore.errors import NotFound  # noqa: E402
from actstore.service import Service  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _delete_bucket(s3_endpoint: str, uri: str) -> None:
    import boto3

    bucket = uri.removeprefix("s3://").split("/")[0]
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)


def test_a_vanished_bucket_is_one_error_line_and_not_found(tmp_path, s3_uri, s3_options, s3_endpoint):
    store = Store.open(s3_uri, storage_options=s3_options)
    ids = store.add_prompts("ds", ["a", "b", "c"])
    store.write_activations("m", 0, ids, np.ones((3, 4), np.float32), n_layers=1, source="s", architecture="x")
    service = Service(store)
    assert service.store.read_activations("m", 0)[0].tolist() == ids
    _delete_bucket(s3_endpoint, s3_uri)

    expected = (
        f"no actstore store at {s3_uri}: the object store answers NoSuchBucket (The specified bucket "
        "does not exist); check the URI and the storage options"
    )
    with pytest.raises(NotFound) as err:
        Store.open(s3_uri, storage_options=s3_options, create=False)
    assert str(err.value) == expected
    # the server's store, opened before: its next reads through the service are NOT_FOUND too
    with pytest.raises(NotFound) as err:
        service.catalog.models()
    assert str(err.value) == expected

    np.save(tmp_path / "acts.npy", np.ones((2, 1, 3), np.float32))
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ACTSTORE_"))}
    env.update(PYTHONPATH=str(REPO), ACTSTORE_STORAGE_OPTIONS=json.dumps(s3_options), HF_HUB_OFFLINE="1")
    for args in (
        ["info"],
        ["verify"],
        [
            "import",
            str(tmp_path / "acts.npy"),
            "--model",
            "m2",
            "--dataset",
            "d",
            "--prompts",
            str(tmp_path / "p.jsonl"),
        ],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "actstore.cli", *args, "--store", s3_uri],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
        assert res.stderr.splitlines() == [f"error: {expected}"], args
