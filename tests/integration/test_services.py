"""The local services answer where services.json says, and the builder works on the base image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def http() -> httpx.Client:
    # Everything is on 127.0.0.1: never go through a proxy from the environment.
    return httpx.Client(trust_env=False, timeout=30.0)


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the Debian docker CLI against the daemon from services.env (DOCKER_HOST)."""
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    return subprocess.run(
        [os.environ["ROCM_NIGHTLY_DOCKER_CLI"], *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
    )


def must(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:
                continue
            if len(address) == 8:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
            else:
                found.add(f"ipv6:{address}")
    return found


def head_manifest(registry: str, repository: str, reference: str) -> httpx.Response:
    with http() as client:
        return client.head(
            f"http://{registry}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
        )


# --------------------------------------------------------------------------- (a) each service answers


@pytest.mark.parametrize("which", ["cache", "public"])
def test_registry_answers_on_loopback(services: dict[str, Any], which: str) -> None:
    address = os.environ[f"ROCM_NIGHTLY_{which.upper()}_REGISTRY"]
    host, port = address.split(":")
    assert host == "127.0.0.1"
    assert services["services"][f"registry-{which}"]["address"] == address
    with http() as client:
        response = client.get(f"http://{address}/v2/")
    assert response.status_code == 200
    assert response.headers.get("docker-distribution-api-version") == "registry/2.0"
    assert listening_addresses(int(port)) == {"127.0.0.1"}
    # The access log is on: later tests prove from it which requests moved bytes.
    log = Path(os.environ[f"ROCM_NIGHTLY_{which.upper()}_REGISTRY_LOG"])
    assert '"GET /v2/ HTTP/1.1" 200' in log.read_text()


def test_moto_answers_ecr_and_s3(services: dict[str, Any]) -> None:
    import boto3  # heavy client: imported where used

    url = os.environ["ROCM_NIGHTLY_MOTO_URL"]
    assert url == "http://127.0.0.1:5100"
    assert listening_addresses(5100) == {"127.0.0.1"}
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    repository = f"services-test-{uuid.uuid4().hex[:8]}"
    bucket = f"services-test-{uuid.uuid4().hex[:8]}"
    ecr = session.client("ecr", endpoint_url=url)
    s3 = session.client("s3", endpoint_url=url)
    created = ecr.create_repository(repositoryName=repository)
    try:
        names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
        assert repository in names
        assert created["repository"]["repositoryUri"].endswith(f"/{repository}")
    finally:
        ecr.delete_repository(repositoryName=repository, force=True)
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="probe.txt", Body=b"probe")
        assert s3.get_object(Bucket=bucket, Key="probe.txt")["Body"].read() == b"probe"
    finally:
        s3.delete_object(Bucket=bucket, Key="probe.txt")
        s3.delete_bucket(Bucket=bucket)


def test_docker_engine_answers(services: dict[str, Any]) -> None:
    docker_host = os.environ["DOCKER_HOST"]
    assert docker_host == services["services"]["docker"]["url"]
    if docker_host.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=docker_host.removeprefix("unix://"))
        with httpx.Client(transport=transport, trust_env=False, timeout=10.0) as client:
            response = client.get("http://docker/_ping")
        assert response.status_code == 200 and response.text == "OK"
    server = json.loads(must(docker("version", "--format", "{{json .Server}}")))
    components = {c["Name"] for c in server["Components"]}
    assert {"Engine", "containerd", "runc"} <= components
    if services["services"]["docker"]["started_by_project"]:
        # Our own engine: loopback only, no default bridge, no NAT.
        networks = set(must(docker("network", "ls", "--format", "{{.Name}}")).split())
        assert networks == {"host", "none"}
        assert not Path("/sys/class/net/docker0").exists()


# --------------------------------------------------------------------------- (b) build + push on the base image


def test_build_on_base_image_and_push_to_cache_registry(services: dict[str, Any], tmp_path: Path) -> None:
    base = os.environ["ROCM_NIGHTLY_BASE_OS_IMAGE"]
    registry = os.environ["ROCM_NIGHTLY_CACHE_REGISTRY"]
    nonce = uuid.uuid4().hex
    repository = "rocm-nightly/services-test"
    tag = f"{registry}/{repository}:{nonce[:16]}"
    # The nonce makes the RUN step a cache miss, so python3 really runs in this build.
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base}\n"
        "ARG NONCE\n"
        "RUN python3 -c 'import sys; open(\"/nonce\", \"w\").write(sys.argv[1])' \"$NONCE\"\n"
    )
    build = docker(
        "build", "--network", "none", "--progress", "plain",
        "--build-arg", f"NONCE={nonce}", "--tag", tag, str(tmp_path),
    )
    output = must(build) + build.stderr
    assert "[internal] load build definition" in output, "the build did not run on BuildKit"
    pushed_digest = None
    try:
        push_output = must(docker("push", tag))
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", push_output)
        assert match, push_output
        pushed_digest = match.group(1)
        response = head_manifest(registry, repository, tag.rsplit(":", 1)[1])
        assert response.status_code == 200
        assert response.headers["docker-content-digest"] == pushed_digest
        # The RUN step ran python3 with the build arg; the image holds its output.
        ran = must(docker("run", "--rm", "--network", "none", f"{registry}/{repository}@{pushed_digest}",
                          "cat", "/nonce"))
        assert ran == nonce
    finally:
        if pushed_digest is not None:
            with http() as client:
                client.delete(f"http://{registry}/v2/{repository}/manifests/{pushed_digest}")
        docker("image", "rm", "--force", tag)


def test_containers_run_on_base_image_without_network(services: dict[str, Any]) -> None:
    base = os.environ["ROCM_NIGHTLY_BASE_OS_IMAGE"]
    script = (
        "import json, socket, sys; "
        "print(json.dumps({'python': list(sys.version_info[:2]), "
        "'os': open('/etc/os-release').read(), "
        "'interfaces': sorted(name for _, name in socket.if_nameindex())}))"
    )
    result = json.loads(must(docker("run", "--rm", "--network", "none", base, "python3", "-c", script)))
    assert result["python"] == [3, 11]
    assert "VERSION_CODENAME=bookworm" in result["os"]
    assert result["interfaces"] == ["lo"]


# --------------------------------------------------------------------------- (c) base image made once, reused


def test_base_image_is_the_one_in_the_cache_registry(services: dict[str, Any]) -> None:
    record = services["base_os_image"]
    registry = os.environ["ROCM_NIGHTLY_CACHE_REGISTRY"]
    digest = record["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert os.environ["ROCM_NIGHTLY_BASE_OS_IMAGE"] == f"{registry}/rocm-nightly/debian@{digest}"
    by_tag = head_manifest(registry, "rocm-nightly/debian", "bookworm")
    assert by_tag.status_code == 200
    assert by_tag.headers["docker-content-digest"] == digest
    assert head_manifest(registry, "rocm-nightly/debian", digest).status_code == 200
    # The digest `up` recorded when it made the image is the one every later `up` reports.
    made = json.loads((Path(services["state_dir"]) / "base-os" / "image.json").read_text())
    assert made["digest"] == digest
    # A lost registry is refilled from the cached rootfs, without debootstrap.
    assert Path(record["rootfs_tarball"]).is_file()
