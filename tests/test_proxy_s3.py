"""The fault-injecting proxy (geochip.testing.proxy.FaultProxy) in front of a real S3 API
(moto's server): every S3 method goes through with its SigV4 signature still valid (checked
by a moto server that verifies signatures), chunked and aws-chunked uploads arrive intact,
a latency of 20 ms adds at least 20 ms to each request, and each fault kind is seen by a
client on downloads and uploads."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from geochip.testing.proxy import FaultProxy
from geochip.testing.s3 import S3Server


@pytest.fixture(scope="module")
def signed_s3() -> Iterator[tuple[S3Server, Credentials]]:
    """A moto server that checks SigV4 signatures (after the 3 unauthenticated IAM calls
    that make a user, its key and its policy), and that user's credentials."""
    previous = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    try:
        server = S3Server().start()
    finally:
        if previous is None:
            del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = previous
    try:
        env = server.environ()
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        iam.create_user(UserName="geochip")
        key = iam.create_access_key(UserName="geochip")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]}
        policy["Statement"][0]["Resource"] = "*"
        iam.put_user_policy(UserName="geochip", PolicyName="all", PolicyDocument=json.dumps(policy))
        yield server, Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()


def _client(endpoint: str, credentials: Credentials, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        config=Config(**config),
    )


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"geochip-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


def test_every_method_passes_with_a_valid_signature(
    signed_s3: tuple[S3Server, Credentials],
) -> None:
    server, credentials = signed_s3
    with FaultProxy(server.endpoint) as proxy:
        client = _client(proxy.url.rstrip("/"), credentials)
        client.create_bucket(Bucket="signed-bucket")
        data = os.urandom(12 << 20)
        client.put_object(Bucket="signed-bucket", Key="small", Body=b"0123456789")
        client.upload_fileobj(  # multipart: POST ?uploads, PUT parts, POST to complete
            io.BytesIO(data),
            "signed-bucket",
            "big",
            Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20),
        )
        got = client.get_object(Bucket="signed-bucket", Key="big", Range="bytes=100-199")
        assert got["Body"].read() == data[100:200]
        assert client.head_object(Bucket="signed-bucket", Key="big")["ContentLength"] == len(data)
        listed = client.list_objects_v2(Bucket="signed-bucket")["Contents"]
        assert sorted(o["Key"] for o in listed) == ["big", "small"]
        client.delete_object(Bucket="signed-bucket", Key="small")
        seen = {(r.method, r.status) for r in proxy.requests}
        assert {("PUT", 200), ("POST", 200), ("GET", 206), ("HEAD", 200), ("DELETE", 204)} <= seen
        # the server does check signatures: a wrong secret is refused through the proxy too
        wrong = Credentials(credentials.access_key, "not-the-secret")
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            _client(proxy.url.rstrip("/"), wrong).get_object(Bucket="signed-bucket", Key="big")


def _aws_chunked(data: bytes, piece: int = 8192) -> bytes:
    """``data`` in the aws-chunked encoding with a CRC32 trailer (what AWS SDKs stream)."""
    out = b"".join(
        f"{len(data[i : i + piece]):x}\r\n".encode() + data[i : i + piece] + b"\r\n"
        for i in range(0, len(data), piece)
    )
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    return out + f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()


def test_chunked_aws_chunked_upload_arrives_intact(
    signed_s3: tuple[S3Server, Credentials],
) -> None:
    server, credentials = signed_s3
    data = os.urandom(50_000)
    payload = _aws_chunked(data)
    with FaultProxy(server.endpoint) as proxy:
        client = _client(proxy.url.rstrip("/"), credentials)
        client.create_bucket(Bucket="chunked-bucket")
        url = f"{proxy.url}chunked-bucket/streamed"
        request = AWSRequest(
            "PUT",
            url,
            data=payload,
            headers={
                "Content-Encoding": "aws-chunked",
                "x-amz-decoded-content-length": str(len(data)),
                "x-amz-trailer": "x-amz-checksum-crc32",
            },
        )
        request.context["checksum"] = {"request_algorithm": {"in": "trailer"}}
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
        assert request.headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.split(":")[2].strip("/")))
        # sent with Transfer-Encoding: chunked on top (no Content-Length), 4 kB at a time
        conn.request(
            "PUT",
            "/chunked-bucket/streamed",
            body=iter(payload[i : i + 4096] for i in range(0, len(payload), 4096)),
            headers=dict(request.headers.items()),
            encode_chunked=True,
        )
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        answer.read()
        conn.close()
        assert proxy.requests[-1].received == len(payload)
        got = client.get_object(Bucket="chunked-bucket", Key="streamed")["Body"].read()
    assert got == data


def test_latency_is_added_to_every_request(proxy: FaultProxy, bucket: str) -> None:
    client = _client(proxy.url.rstrip("/"), Credentials("k", "s"))
    client.put_object(Bucket=bucket, Key="a", Body=b"x" * 1000)
    proxy.latency = 0.02
    slow = []
    for method in ("get", "head", "put", "delete") * 2:
        start = time.perf_counter()
        if method == "get":
            client.get_object(Bucket=bucket, Key="a", Range="bytes=0-9")["Body"].read()
        elif method == "head":
            client.head_object(Bucket=bucket, Key="a")
        elif method == "put":
            client.put_object(Bucket=bucket, Key="b", Body=b"y")
        else:
            client.delete_object(Bucket=bucket, Key="b")
        slow.append(time.perf_counter() - start)
    assert min(slow) >= 0.02, slow


def _raw(proxy: FaultProxy, method: str, path: str, body: bytes | None = None) -> Any:
    """``method path`` through the proxy with a plain HTTP client, signed as S3 wants (moto
    tells services apart by the signature's scope): (status, body)."""
    request = AWSRequest(method, f"{proxy.url.rstrip('/')}{path}", data=body or b"")
    S3SigV4Auth(Credentials("k", "s"), "s3", "us-east-1").add_auth(request)
    port = int(proxy.url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(request.headers.items()))
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _object(s3_server: S3Server, bucket: str, key: str) -> bytes | None:
    """The object as stored (read from the server itself, not through the proxy)."""
    client = _client(s3_server.endpoint, Credentials("k", "s"))
    try:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError:
        return None


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_status_faults_are_seen_and_not_forwarded(
    proxy: FaultProxy, bucket: str, s3_server: S3Server, status: int, method: str
) -> None:
    _raw(proxy, "PUT", f"/{bucket}/a", b"old")
    proxy.add_fault("status", status=status, count=1, method=method)
    got = _raw(proxy, method, f"/{bucket}/a", b"new" if method == "PUT" else None)
    assert got[0] == status
    assert _object(s3_server, bucket, "a") == b"old"  # an upload refused was not forwarded
    assert _raw(proxy, method, f"/{bucket}/a", b"new" if method == "PUT" else None)[0] == 200


def test_download_faults_are_seen(proxy: FaultProxy, bucket: str) -> None:
    data = os.urandom(100_000)
    _raw(proxy, "PUT", f"/{bucket}/a", data)
    proxy.add_fault("reset", count=1, method="GET")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        _raw(proxy, "GET", f"/{bucket}/a")
    proxy.add_fault("truncate", count=1, method="GET")
    with pytest.raises(http.client.IncompleteRead) as cut:
        _raw(proxy, "GET", f"/{bucket}/a")
    assert cut.value.partial == data[:50_000]
    proxy.add_fault("cut", count=1, method="GET")
    assert _raw(proxy, "GET", f"/{bucket}/a") == (200, data[:50_000])  # silently short
    proxy.add_fault("delay", count=1, method="GET", seconds=0.3)
    start = time.perf_counter()
    assert _raw(proxy, "GET", f"/{bucket}/a") == (200, data)
    assert time.perf_counter() - start >= 0.3
    proxy.add_fault("stall", count=1, method="GET", seconds=0.3)
    start = time.perf_counter()
    with pytest.raises(http.client.IncompleteRead):
        _raw(proxy, "GET", f"/{bucket}/a")
    assert time.perf_counter() - start >= 0.3
    assert _raw(proxy, "GET", f"/{bucket}/a") == (200, data)
    assert [r.fault for r in proxy.requests[1:]] == [
        "reset", "truncate", "cut", "delay", "stall", None
    ]  # fmt: skip


def test_upload_faults_are_seen(proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    data = os.urandom(100_000)
    for kind in ("reset", "truncate"):  # nothing reaches the server
        proxy.add_fault(kind, count=1, method="PUT")
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
            _raw(proxy, "PUT", f"/{bucket}/{kind}", data)
        assert _object(s3_server, bucket, kind) is None
    proxy.add_fault("lost", count=1, method="PUT")  # written, but the answer is lost
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        _raw(proxy, "PUT", f"/{bucket}/lost", data)
    assert _object(s3_server, bucket, "lost") == data
    assert [(r.fault, r.received) for r in proxy.requests] == [
        ("reset", len(data)), ("truncate", len(data) // 2), ("lost", len(data))
    ]  # fmt: skip


def test_boto3_retries_what_the_proxy_injects(proxy: FaultProxy, bucket: str) -> None:
    client = _client(
        proxy.url.rstrip("/"),
        Credentials("k", "s"),
        retries={"max_attempts": 5, "mode": "standard"},
    )
    data = os.urandom(10_000)
    proxy.add_fault("status", status=503, count=1, method="PUT")
    proxy.add_fault("reset", count=1, method="PUT")
    client.put_object(Bucket=bucket, Key="a", Body=data)
    proxy.add_fault("status", status=500, count=1, method="GET")
    assert client.get_object(Bucket=bucket, Key="a")["Body"].read() == data
    # a body cut short: get_object's stream does not retry it, s3transfer's download does
    proxy.add_fault("truncate", count=1, method="GET")
    with pytest.raises(Exception, match="(?i)incomplete|connection|ended"):
        client.get_object(Bucket=bucket, Key="a")["Body"].read()
    proxy.add_fault("truncate", count=1, method="GET")
    out = io.BytesIO()
    client.download_fileobj(bucket, "a", out)
    assert out.getvalue() == data
    faults = [(r.method, r.fault) for r in proxy.requests]
    assert faults == [
        ("PUT", "status"), ("PUT", "reset"), ("PUT", None), ("GET", "status"), ("GET", None),
        ("GET", "truncate"), ("HEAD", None), ("GET", "truncate"), ("GET", None),
    ]  # fmt: skip
