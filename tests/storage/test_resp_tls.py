"""apiguard's RESP client over TLS, against a real redis-server that speaks only TLS."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from apiguard import StorageError
from apiguard.storage import Quota, RedisStore, open_store
from tests._servers import RedisServer, free_port, redis_server_binary

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiguard test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_redis(certificate: tuple[Path, Path]) -> Iterator[RedisServer]:
    """redis-server speaking only TLS (Debian's is built with it)."""
    cert, key = certificate
    port = free_port()
    server = RedisServer(
        redis_server_binary(),
        port=port,
        args=[
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ],
    )
    server.start()
    yield server
    server.kill()


@pytest.mark.usefixtures("close_stores")
async def test_tls_with_the_servers_certificate(
    tls_redis: RedisServer, certificate: tuple[Path, Path]
) -> None:
    store = open_store(f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={certificate[0]}")
    assert isinstance(store, RedisStore)
    acquire = store.limiter("fixed-window")
    assert (await acquire("k", (Quota("q", 5, 60),), 1)).used == (1,)
    assert (await acquire("k", (Quota("q", 5, 60),), 1)).used == (2,)


@pytest.mark.usefixtures("close_stores")
async def test_tls_verifies_the_certificate_by_default(tls_redis: RedisServer) -> None:
    """A self-signed certificate the client was not given is refused."""
    acquire = open_store(f"rediss://127.0.0.1:{tls_redis.port}/0").limiter("fixed-window")  # type: ignore[union-attr]
    with pytest.raises(StorageError) as caught:
        await acquire("k", (Quota("q", 5, 60),), 1)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(caught.value.__cause__.__cause__)  # type: ignore[union-attr]


@pytest.mark.usefixtures("close_stores")
async def test_tls_verification_can_be_turned_off_explicitly(tls_redis: RedisServer) -> None:
    store = open_store(f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_cert_reqs=none")
    acquire = store.limiter("fixed-window")  # type: ignore[union-attr]
    assert (await acquire("k", (Quota("q", 5, 60),), 1)).admitted


@pytest.mark.usefixtures("close_stores")
async def test_tls_checks_the_host_name(
    tls_redis: RedisServer, certificate: tuple[Path, Path]
) -> None:
    """The certificate names 127.0.0.1 and localhost, not 127.0.0.2."""
    uri = f"rediss://127.0.0.2:{tls_redis.port}/0?ssl_ca_certs={certificate[0]}"
    acquire = open_store(uri).limiter("fixed-window")  # type: ignore[union-attr]
    with pytest.raises(StorageError):
        await acquire("k", (Quota("q", 5, 60),), 1)
