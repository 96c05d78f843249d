"""Service identity, tried from outside: the ledger adapter (embedded ledger) and the brand's registry, each
behind a real gRPC server on loopback with mTLS from a development CA, over a real PostgreSQL. Callers
without a certificate, with another CA's, an expired or a revoked one, with a role that lacks the RPC,
or of another organisation are refused, and nothing changes; rotating the server's certificate under a
client that keeps calling fails no call; write rates are per organisation and say when to retry."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from urllib.parse import quote
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_
from cryptography import x509

from shelfproof.ledger.adapter.service import LedgerAdapter
from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.engines.embedded import EmbeddedEngine
from shelfproof.ledger.genesis import (
    DEMO_BRAND_GLN, DEMO_BRAND_PREFIX, DEMO_RETAILER_GLN, DEMO_RETAILER_PREFIX, DEMO_SECOND_STORE_GLN, build_genesis,
)
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import product_pb2 as ppb
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.product.v1 import events_pb2_grpc, product_pb2_grpc
from shelfproof.registry.events import EventService
from shelfproof.registry.projector import RegistryProjector
from shelfproof.registry.rest import EpcisRestApi, EpcisRestServer
from shelfproof.registry.service import ProductService
from shelfproof.runtime.client import service_channel
from shelfproof.runtime.errors import Overloaded, error_from_rpc
from shelfproof.runtime.server import GrpcServer
from shelfproof.runtime.settings import GrpcServerSettings, TlsSettings
from shelfproof.runtime.tls import DevCertificateAuthority, client_ssl_context, identity_of, server_ssl_context
from tests.conftest import fresh_database

from psycopg_pool import AsyncConnectionPool

CHAIN = "identity-test"
GTIN = "00614141999996"
RETAILER_GTIN = "04012345000016"


def _tls(ca: DevCertificateAuthority, name: str) -> TlsSettings:
    return TlsSettings(
        cert_file=ca.directory / f"{name}.pem", key_file=ca.directory / f"{name}.key", ca_file=ca.ca_file, crl_file=ca.crl_file
    )


class World:
    """The CA, the certificates of every caller the tests play, and the two servers."""

    def __init__(self, tmp: Path, dsn: str) -> None:
        self.tmp, self.dsn = tmp, dsn
        self.ca = DevCertificateAuthority.create_or_load(tmp / "ca")
        self.other_ca = DevCertificateAuthority.create_or_load(tmp / "other-ca", name="someone else's CA")
        for name, gln, role in [
            ("ledger", "0000000000017", "ledger"),
            ("registry", DEMO_BRAND_GLN, "registry"),
            ("brand-system", DEMO_BRAND_GLN, "system"),
            ("retailer-system", DEMO_RETAILER_GLN, "system"),
            ("other-retailer-system", DEMO_SECOND_STORE_GLN, "system"),
            ("auditor", DEMO_RETAILER_GLN, "auditor"),
            ("revoked", DEMO_BRAND_GLN, "system"),
        ]:
            self.ca.issue(name, gln, role)
        self.ca.issue("expired", DEMO_BRAND_GLN, "system", validity=dt.timedelta(minutes=1),
                      not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
        self.other_ca.issue("brand-system", DEMO_BRAND_GLN, "system")
        self.genesis = build_genesis(CHAIN, [(DEMO_BRAND_GLN, "brand", [DEMO_BRAND_PREFIX]),
                                             (DEMO_RETAILER_GLN, "retailer", [DEMO_RETAILER_PREFIX])], agents_per_org=1)

    async def __aenter__(self) -> "World":
        self.engine = EmbeddedEngine(self.tmp / "engine", CHAIN, self.genesis.state, block_interval_s=0.01)
        await self.engine.start()
        self.adapter = LedgerAdapter(self.engine, self.tmp / "adapter")
        await self.adapter.start()
        self.ledger_server = GrpcServer(GrpcServerSettings(port=0), [self.adapter.binding()], tls=_tls(self.ca, "ledger"))
        self.ledger_address = f"127.0.0.1:{await self.ledger_server.start()}"
        # A second ledger server with a small write budget: the per-organisation rate test.
        self.slow_server = GrpcServer(GrpcServerSettings(port=0, write_rate_per_s=0.2, write_burst=2),
                                      [self.adapter.binding()], tls=_tls(self.ca, "ledger"))
        self.slow_address = f"127.0.0.1:{await self.slow_server.start()}"
        self.registry_tls = _tls(self.ca, "registry")
        self.registry_ledger_channel = service_channel(self.ledger_address, self.registry_tls)
        ledger = ledger_pb2_grpc.LedgerServiceStub(self.registry_ledger_channel)
        self.pool = AsyncConnectionPool(self.dsn, min_size=1, max_size=4, open=False)
        await self.pool.open(wait=True)
        self.projector = RegistryProjector(self.pool, ledger)
        await self.projector.start()
        signer = self.genesis.accounts[f"{DEMO_BRAND_GLN}/admin-0"].signer(CHAIN)
        ledger_client = LedgerClient(ledger, signer)
        products = ProductService(self.pool, ledger_client, self.projector, DEMO_BRAND_GLN)
        events = EventService(self.pool, ledger_client, self.projector)
        self.registry_server = GrpcServer(GrpcServerSettings(port=0), [products.binding(), events.binding()],
                                          tls=self.registry_tls, signing_organization=DEMO_BRAND_GLN)
        self.registry_address = f"127.0.0.1:{await self.registry_server.start()}"
        tls = self.registry_tls
        self.rest = EpcisRestServer(EpcisRestApi(self.pool, events, self.registry_server.authorization), "127.0.0.1", 0,
                                    server_ssl_context(tls.cert_file, tls.key_file, tls.ca_file))
        self.rest_origin = f"https://127.0.0.1:{await self.rest.start()}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.rest.stop()
        await self.registry_server.stop()
        await self.projector.stop()
        await self.pool.close()
        await self.registry_ledger_channel.close()
        await self.slow_server.stop()
        await self.ledger_server.stop()
        await self.adapter.stop()
        await self.engine.close()

    def products(self, caller: str, ca: DevCertificateAuthority | None = None) -> tuple[grpc.aio.Channel, product_pb2_grpc.ProductServiceStub]:
        channel = service_channel(self.registry_address, _tls(ca or self.ca, caller))
        return channel, product_pb2_grpc.ProductServiceStub(channel)

    async def product_exists(self, gtin: str) -> bool:
        channel, stub = self.products("brand-system")
        async with channel:
            try:
                await stub.GetProduct(ppb.GetProductRequest(gtin=gtin), timeout=10)
                return True
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                return False


@pytest.fixture(scope="module")
async def world(tmp_path_factory, postgres_cluster, migrated_template):
    with fresh_database(postgres_cluster, migrated_template) as dsn:
        async with World(tmp_path_factory.mktemp("identity"), dsn) as world:
            yield world


def _create(gtin: str, name: str = "Identity test oil") -> ppb.CreateProductRequest:
    return ppb.CreateProductRequest(product=ppb.Product(gtin=gtin, name=name, brand="Demo"))


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_no_certificate_another_ca_or_an_expired_one_fails_the_handshake_and_writes_nothing(world):
    plaintext = grpc.aio.insecure_channel(world.registry_address)
    server_only = grpc.aio.secure_channel(world.registry_address, grpc.ssl_channel_credentials(world.ca.ca_file.read_bytes()))
    foreign, _ = world.products("brand-system", world.other_ca)
    expired, _ = world.products("expired")
    for channel in (plaintext, server_only, foreign, expired):
        async with channel:
            stub = product_pb2_grpc.ProductServiceStub(channel)
            assert await _code(stub.CreateProduct(_create(GTIN), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    assert not await world.product_exists(GTIN)


async def test_a_revoked_certificate_is_unauthenticated_without_a_restart(world):
    channel, stub = world.products("revoked")
    async with channel:
        assert await _code(stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)) == grpc.StatusCode.NOT_FOUND
        world.ca.revoke(world.ca.directory / "revoked.pem")
        try:
            await stub.CreateProduct(_create(GTIN), timeout=10)
            raise AssertionError("a revoked certificate wrote")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_from_rpc(error).reason == "ERROR_REASON_CERTIFICATE_REVOKED"
    assert not await world.product_exists(GTIN)


async def test_a_role_without_the_rpc_is_permission_denied_and_nothing_changes(world):
    channel, stub = world.products("auditor")
    async with channel:
        assert await _code(stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)) == grpc.StatusCode.NOT_FOUND
        assert await _code(stub.CreateProduct(_create(GTIN), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    # nor may an auditor carry a well-formed, validly signed transaction (or content) to the ledger
    agent = f"{DEMO_RETAILER_GLN}/admin-0"
    envelope = world.genesis.accounts[agent].signer(CHAIN).sign(
        txpb.TransactionBody(register_product=txpb.RegisterProduct(gtin=RETAILER_GTIN, name="x", brand="x")), nonce=1
    )
    auditor_ledger = service_channel(world.ledger_address, _tls(world.ca, "auditor"))
    async with auditor_ledger:
        ledger = ledger_pb2_grpc.LedgerServiceStub(auditor_ledger)
        submit = lpb.SubmitTransactionRequest(transaction=envelope, wait_for_commit=True)
        assert await _code(ledger.SubmitTransaction(submit, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        assert await _code(ledger.PutContent(lpb.PutContentRequest(content=b"audit"), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        # what it may do: read, and see that nothing changed
        await asyncio.sleep(0.1)  # a few blocks (10 ms each) for anything that had slipped through
        record = await ledger.Query(lpb.QueryRequest(store="agents", key=agent.encode()), timeout=10)
        assert st.AgentRecord.FromString(record.value).nonce == 0
        assert not (await ledger.Query(lpb.QueryRequest(store="products", key=RETAILER_GTIN.encode()), timeout=10)).found
    assert not await world.product_exists(GTIN)


async def test_another_organisations_system_may_not_write_through_the_brands_registry(world):
    channel, stub = world.products("retailer-system")
    async with channel:
        assert await _code(stub.CreateProduct(_create(GTIN), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        # reading the brand's public master data is allowed
        assert await _code(stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)) == grpc.StatusCode.NOT_FOUND
    assert not await world.product_exists(GTIN)
    channel, stub = world.products("brand-system")
    async with channel:
        await stub.CreateProduct(_create(GTIN), timeout=30)
    assert await world.product_exists(GTIN)


async def test_rotating_the_servers_certificate_fails_no_call_of_a_client_that_keeps_calling(world):
    before = _presented_serial(world.registry_address, world.ca, "brand-system")
    failures: list[BaseException] = []
    calls = 0
    stop = asyncio.Event()

    async def keep_calling() -> None:
        nonlocal calls
        long_lived, stub = world.products("brand-system")
        async with long_lived:
            while not stop.is_set():
                fresh, fresh_stub = world.products("brand-system")  # a new handshake every round
                async with fresh:
                    for target in (stub, fresh_stub):
                        try:
                            await target.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)
                        except grpc.aio.AioRpcError as error:
                            failures.append(error)
                        calls += 1

    caller = asyncio.create_task(keep_calling())
    await asyncio.sleep(0.3)
    world.ca.issue("registry", DEMO_BRAND_GLN, "registry")  # new key and certificate, same files
    await asyncio.sleep(0.5)
    stop.set()
    await caller
    after = _presented_serial(world.registry_address, world.ca, "brand-system")
    assert calls > 10 and failures == []
    assert after != before and after == x509.load_pem_x509_certificate((world.ca.directory / "registry.pem").read_bytes()).serial_number


async def test_write_rate_is_per_organisation_and_says_when_to_retry(world):
    async def put(caller: str) -> grpc.StatusCode | Overloaded:
        channel = service_channel(world.slow_address, _tls(world.ca, caller))
        async with channel:
            try:
                await ledger_pb2_grpc.LedgerServiceStub(channel).PutContent(lpb.PutContentRequest(content=caller.encode()), timeout=10)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                return error_from_rpc(error)  # type: ignore[return-value]

    assert [await put("brand-system") for _ in range(2)] == [grpc.StatusCode.OK] * 2
    refused = await put("brand-system")
    assert isinstance(refused, Overloaded) and refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.retry_after_s is not None and 0 < refused.retry_after_s <= 5.0
    # reads are not charged, and another organisation has its own budget
    channel = service_channel(world.slow_address, _tls(world.ca, "brand-system"))
    async with channel:
        await ledger_pb2_grpc.LedgerServiceStub(channel).GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=10)
    assert await put("retailer-system") == grpc.StatusCode.OK


def test_every_rpc_of_every_service_has_a_row_and_certificates_name_one_identity(world):
    from tests.security.test_fuzz_grpc import shelfproof_services
    from shelfproof.runtime.identity import AUTHORIZATION, ROLES
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for service in shelfproof_services():
        methods = {m.name for m in pool.FindServiceByName(service).methods}
        assert set(AUTHORIZATION.get(service, {})) == methods, service
    assert all(rule.roles <= ROLES for rules in AUTHORIZATION.values() for rule in rules.values())
    identity = identity_of(x509.load_pem_x509_certificate((world.ca.directory / "retailer-system.pem").read_bytes()))
    assert (identity.organization_gln, identity.role) == (DEMO_RETAILER_GLN, "system")
    with pytest.raises(ValueError):
        world.ca.issue("bad", "not-a-gln", "system")


async def test_a_service_outside_development_refuses_the_development_ca_and_dev_keys(world, tmp_path):
    from shelfproof.ledger.__main__ import LedgerSettings, serve
    from shelfproof.runtime.identity import refuse_development_material

    settings = LedgerSettings(engine="embedded", port=0, home=tmp_path / "ledger")
    with pytest.raises(SystemExit, match="development CA"):
        await serve(settings, tmp_path, _tls(world.ca, "ledger"), "production")
    with pytest.raises(SystemExit, match="TLS is required"):
        await serve(settings, tmp_path, TlsSettings(), "production")
    assert not (tmp_path / "ledger" / "genesis.json").exists()  # refused before it wrote anything
    # a CA of its own passes; the development genesis (private keys inside) does not
    tls = _tls(world.other_ca, "brand-system")
    refuse_development_material("production", tls)
    with pytest.raises(SystemExit, match="private keys"):
        refuse_development_material("production", tls, holds_private_keys=True)
    refuse_development_material("development", _tls(world.ca, "ledger"), holds_private_keys=True)


def _presented_serial(address: str, ca: DevCertificateAuthority, caller: str) -> int:
    """The serial of the certificate the server presents in a fresh handshake."""
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.load_cert_chain(ca.directory / f"{caller}.pem", ca.directory / f"{caller}.key")
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


async def test_the_epcis_rest_binding_asks_for_the_same_certificates_and_decides_the_same_way(world):
    import httpx

    tls = lambda name: client_ssl_context(*(world.ca.directory / f"{name}.{ext}" for ext in ("pem", "key")), world.ca.ca_file)  # noqa: E731
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(world.ca.ca_file)), timeout=10) as anonymous:
        with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake (or the first read) fails
            await anonymous.get(f"{world.rest_origin}/events")
    document = {"@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
                "schemaVersion": "2.0", "creationDate": "2026-01-01T00:00:00Z", "epcisBody": {"eventList": []}}
    async with httpx.AsyncClient(verify=tls("auditor"), timeout=10) as auditor:
        assert (await auditor.get(f"{world.rest_origin}/events")).status_code == 200
        refused = await auditor.post(f"{world.rest_origin}/capture", json=document)
        assert refused.status_code == 403 and refused.json()["type"] == "epcisException:SecurityException"
    async with httpx.AsyncClient(verify=tls("revoked"), timeout=10) as revoked:  # revoked by the test above
        world.ca.revoke(world.ca.directory / "revoked.pem")
        assert (await revoked.get(f"{world.rest_origin}/events")).status_code == 401
    async with httpx.AsyncClient(verify=tls("retailer-system"), timeout=10) as retailer:
        assert (await retailer.post(f"{world.rest_origin}/capture", json=document)).status_code == 403


def _shipping(serial: str, destination: str | None) -> dict:
    event = {"type": "ObjectEvent", "eventTime": "2026-11-21T09:30:00.000+01:00", "eventTimeZoneOffset": "+01:00",
             "epcList": [f"https://id.gs1.org/01/{GTIN}/21/{serial}"], "action": "OBSERVE", "bizStep": "shipping",
             "disposition": "in_transit"}
    if destination:
        event["destinationList"] = [{"type": "owning_party", "destination": f"https://id.gs1.org/417/{destination}"}]
    return event


async def test_a_retailers_certificate_reads_only_what_names_it_and_another_retailer_reads_nothing(world):
    import json

    document = {"@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
                "schemaVersion": "2.0", "creationDate": "2026-11-25T10:00:00.000+01:00",
                "epcisBody": {"eventList": [_shipping("S1", DEMO_RETAILER_GLN), _shipping("S2", None)]}}

    async def events_seen_by(caller: str) -> tuple[list[str], int]:
        async with service_channel(world.registry_address, _tls(world.ca, caller)) as channel:
            stub = events_pb2_grpc.EventServiceStub(channel)
            listed = await stub.ListEvents(epb.ListEventsRequest(page_size=100), timeout=10)
            exported = await stub.ExportEvents(epb.ExportEventsRequest(), timeout=10)
        serials = sorted(epc.rsplit("/", 1)[1] for e in listed.events for epc in json.loads(e.event_json)["epcList"])
        return serials, len(json.loads(exported.epcis_document)["epcisBody"]["eventList"])

    async with service_channel(world.registry_address, _tls(world.ca, "brand-system")) as channel:
        await events_pb2_grpc.EventServiceStub(channel).CaptureEvents(
            epb.CaptureEventsRequest(epcis_document=json.dumps(document).encode()), timeout=30)
    assert await events_seen_by("brand-system") == (["S1", "S2"], 2)  # its registry recorded both
    assert await events_seen_by("retailer-system") == (["S1"], 1)  # shipped to it
    assert await events_seen_by("other-retailer-system") == ([], 0)  # a stolen retailer certificate: nothing of the other's
    import httpx

    identity = client_ssl_context(world.ca.directory / "other-retailer-system.pem", world.ca.directory / "other-retailer-system.key", world.ca.ca_file)
    async with httpx.AsyncClient(verify=identity, timeout=10) as other:
        reply = await other.get(f"{world.rest_origin}/events")
        assert reply.status_code == 200 and reply.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"] == []


async def test_a_client_follows_its_rotated_certificate_on_the_same_channel_object(world, tmp_path):
    world.ca.issue("rotating-system", DEMO_BRAND_GLN, "system")
    channel = service_channel(world.registry_address, _tls(world.ca, "rotating-system"))
    async with channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        assert await _code(stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)) in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
        old = tmp_path / "old.pem"
        old.write_bytes((world.ca.directory / "rotating-system.pem").read_bytes())
        world.ca.issue("rotating-system", DEMO_BRAND_GLN, "system")  # rotated in place ...
        world.ca.revoke(old)  # ... and the old certificate revoked at once
        await asyncio.sleep(1.1)  # the channel looks at its files once a second
        assert await _code(stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)) in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize("uris", [
    [],  # our CA's certificate naming no identity
    ["spiffe://shelfproof.dev/org/0614141000005/role/system", "spiffe://shelfproof.dev/org/4012345000009/role/system"],  # two
    ["spiffe://shelfproof.dev/org/4012345000009'--/role/system"],  # SQL metacharacters in the GLN
    ["spiffe://shelfproof.dev/org/" + quote("０６１４１４１０００００５") + "/role/system"],  # full-width digits (a confusable GLN)
    ["spiffe://evil.example/org/0614141000005/role/system"],  # another trust domain
    ["spiffe://shelfproof.dev/org/0614141000005/role/root"],  # a role that does not exist
])
async def test_a_certificate_of_our_ca_with_a_malformed_identity_is_refused_and_writes_nothing(world, uris):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(world.ca.certificate.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(world.ca._key, hashes.SHA256())
    )
    credentials = grpc.ssl_channel_credentials(
        world.ca.ca_file.read_bytes(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        certificate.public_bytes(serialization.Encoding.PEM),
    )
    async with grpc.aio.secure_channel(world.registry_address, credentials) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        code = await _code(stub.CreateProduct(_create("00614141888887"), timeout=10))
    # a well-formed identity with a role no row names is PERMISSION_DENIED; anything else names nobody
    expected = grpc.StatusCode.PERMISSION_DENIED if uris and uris[0].endswith("/role/root") else grpc.StatusCode.UNAUTHENTICATED
    assert code == expected
    assert not await world.product_exists("00614141888887")


async def test_a_rotation_caught_between_its_two_writes_keeps_the_last_good_pair(world):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    serving = _presented_serial(world.registry_address, world.ca, "brand-system")
    stray = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (world.ca.directory / "registry.key").write_bytes(stray)  # the new key is there, its certificate not yet
    assert _presented_serial(world.registry_address, world.ca, "brand-system") == serving  # the old pair still serves
    channel, stub = world.products("brand-system")
    async with channel:
        assert await _code(stub.GetProduct(ppb.GetProductRequest(gtin=GTIN), timeout=10)) in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
    world.ca.issue("registry", DEMO_BRAND_GLN, "registry")  # the rotation completes
    assert _presented_serial(world.registry_address, world.ca, "brand-system") != serving


def test_a_connection_that_outlives_its_certificate_is_refused_on_its_next_call(world):
    """TLS checks validity at the handshake only; the interceptor checks it on every call."""
    from shelfproof.runtime.identity import CallerAuthorization
    from shelfproof.runtime.tls import Identity, RevocationList

    decide = CallerAuthorization(RevocationList(world.ca.crl_file, world.ca.ca_file), write_rate_per_s=1, write_burst=1)
    now = dt.datetime.now(dt.timezone.utc)
    method = "/shelfproof.product.v1.ProductService/GetProduct"
    assert decide.admit_caller(method, Identity(DEMO_BRAND_GLN, "system", 1, now + dt.timedelta(minutes=1))).role == "system"
    with pytest.raises(Exception) as expired:
        decide.admit_caller(method, Identity(DEMO_BRAND_GLN, "system", 2, now - dt.timedelta(seconds=1)))
    assert expired.value.code == grpc.StatusCode.UNAUTHENTICATED and expired.value.reason == "ERROR_REASON_CERTIFICATE_EXPIRED"


_FUZZ_KEY = None


@settings(max_examples=150, deadline=None)
@given(st_.lists(st_.text(alphabet=st_.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=120), max_size=3),
       st_.sampled_from(["", "spiffe://shelfproof.dev/org/", "spiffe://shelfproof.dev/org/0614141000005/role/"]))
def test_any_san_uri_names_one_valid_identity_or_none(tails, stem):
    """Whatever URIs a certificate carries, identity_of answers a well-formed identity or None, never raises."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    global _FUZZ_KEY
    _FUZZ_KEY = _FUZZ_KEY or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_FUZZ_KEY.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(stem + t) for t in tails] or [x509.DNSName("x")]), critical=False)
        .sign(_FUZZ_KEY, hashes.SHA256())
    )
    identity = identity_of(certificate)
    if identity is not None:
        from shelfproof.runtime.tls import identity_uri

        assert identity.organization_gln.isascii() and identity.organization_gln.isdigit() and len(identity.organization_gln) == 13
        assert identity_uri(identity.organization_gln, identity.role) in [stem + t for t in tails]
