"""The product registry over real PostgreSQL, a real gRPC server and the ledger (embedded engine)."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from psycopg_pool import AsyncConnectionPool

from shelfproof.ledger.genesis import DEMO_BRAND_GLN
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.product.v1 import events_pb2, labels_pb2
from shelfproof.product.v1 import product_pb2 as pb
from shelfproof.registry.projector import RegistryProjector
from shelfproof.runtime import errors
from tests.integration.harness import Registry
from tests.integration.test_registry_events import JOURNEY, _document

VALID_GTINS = ["00614141123452", "00614141123469", "00614141123476", "00614141123483", "00614141123490"]


def _table(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT gtin, name, brand, category, net_content, attributes, brand_owner_gln, create_time, update_time,"
            " ledger_height, tx_hash FROM products ORDER BY gtin"
        ).fetchall()


def _first_serial(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT serial FROM items ORDER BY leaf_index LIMIT 1").fetchone()[0]


def _query_model(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            "products": _table(dsn),
            "batches": conn.execute("SELECT * FROM batches ORDER BY batch_id").fetchall(),
            "items": conn.execute("SELECT * FROM items ORDER BY gtin, serial").fetchall(),
            "recalls": conn.execute("SELECT * FROM recalls ORDER BY gtin, lot").fetchall(),
            "locations": conn.execute("SELECT * FROM locations ORDER BY gln").fetchall(),
            "events": conn.execute("SELECT * FROM events ORDER BY event_hash").fetchall(),
            "event_items": conn.execute("SELECT * FROM event_items ORDER BY gtin, serial, event_hash").fetchall(),
            "inventory_positions": conn.execute("SELECT * FROM inventory_positions ORDER BY gtin, location_gln").fetchall(),
        }


async def test_create_get_list_update_idempotent_and_rebuild(tmp_path, database_dsn, postgres_cluster):
    async with Registry(tmp_path, database_dsn) as registry:
        stub = registry.stub
        created = (await stub.CreateProduct(pb.CreateProductRequest(
            product=pb.Product(gtin="614141123452", name="Olive oil", brand="Demo", attributes={"origin": "IT"}),
            request_id="req-1"), timeout=20)).product
        assert created.gtin == "00614141123452" and created.brand_owner_gln == DEMO_BRAND_GLN
        assert created.ledger_ref.height > 0 and len(created.ledger_ref.tx_hash) == 32
        # A retry with the same request id returns the same product and writes nothing new.
        retried = (await stub.CreateProduct(pb.CreateProductRequest(
            product=pb.Product(gtin="614141123452", name="Olive oil", brand="Demo"), request_id="req-1"), timeout=20)).product
        assert retried == created
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin="00614141123452", name="dup")), timeout=20)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

        for gtin in VALID_GTINS[1:]:
            await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=gtin, name=f"p{gtin}")), timeout=20)
        fetched = (await stub.GetProduct(pb.GetProductRequest(gtin="00614141123476"), timeout=5)).product
        assert fetched.name == "p00614141123476"

        pages, token = [], ""
        while True:
            page = await stub.ListProducts(pb.ListProductsRequest(page_size=2, page_token=token), timeout=5)
            pages.append([p.gtin for p in page.products])
            token = page.next_page_token
            if not token:
                break
        assert pages == [VALID_GTINS[0:2], VALID_GTINS[2:4], VALID_GTINS[4:5]]

        assert (await stub.GetProduct(pb.GetProductRequest(gtin="00614141123452"), timeout=5)).product.name == "Olive oil"
        updated = (await stub.UpdateProduct(pb.UpdateProductRequest(
            product=pb.Product(gtin="00614141123452", name="Extra virgin olive oil", brand="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]), request_id="req-2"), timeout=20)).product
        assert updated.name == "Extra virgin olive oil" and updated.brand == "Demo"
        assert updated.ledger_ref.height > created.ledger_ref.height
        # The read path (cached) sees the update at once.
        assert (await stub.GetProduct(pb.GetProductRequest(gtin="00614141123452"), timeout=5)).product == updated

        async for _ in stub.CommissionItems(pb.CommissionItemsRequest(gtin=VALID_GTINS[1], lot="L7", count=1_000), timeout=60):
            pass
        await stub.CreateLocation(pb.CreateLocationRequest(location=pb.Location(gln="0614141000029", name="DC North", country_code="DE")), timeout=20)
        await registry.events.CaptureEvents(events_pb2.CaptureEventsRequest(epcis_document=_document(JOURNEY)), timeout=60)
        await registry.labels.VoidLabels(
            labels_pb2.VoidLabelsRequest(gtin=VALID_GTINS[1], serials=[_first_serial(database_dsn)], reason="torn"), timeout=20
        )
        recall = (await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[1], lot="L7", reason="seal"), timeout=20)).recall
        last_height = recall.ledger_ref.height

        # Rebuild: an empty database fed from the ledger and its content store alone gives identical tables.
        before = _query_model(database_dsn)
        assert len(before["items"]) == 1_000 and len(before["products"]) == 5 and len(before["recalls"]) == 1
        assert len(before["locations"]) == 1 and len(before["events"]) == 4 and before["inventory_positions"]
        assert sum(1 for item in before["items"] if item[4] is not None) == 1  # the voided label
        rebuilt_db = "rebuilt_" + database_dsn.rsplit("/", 1)[1]
        with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{rebuilt_db}" TEMPLATE shelfproof_template')
        rebuilt_dsn = postgres_cluster.dsn(rebuilt_db)
        try:
            pool = AsyncConnectionPool(rebuilt_dsn, min_size=1, max_size=2, open=False)
            await pool.open(wait=True)
            projector = RegistryProjector(pool, ledger_pb2_grpc.LedgerServiceStub(registry.ledger_channel))
            await projector.start()
            assert await projector.wait_for(last_height, 0, timeout_s=20)
            await asyncio.sleep(0.2)
            await projector.stop()
            await pool.close()
            assert _query_model(rebuilt_dsn) == before
        finally:
            with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{rebuilt_db}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("product", "field"),
    [
        (pb.Product(gtin="00614141123453", name="bad check digit"), "product.gtin"),
        (pb.Product(gtin="12345", name="too short"), "product.gtin"),
        (pb.Product(gtin="0061414112345a", name="letters"), "product.gtin"),
        (pb.Product(gtin="00614141123452", name=""), "product.name"),
        (pb.Product(gtin="00614141123452", name="x" * 300), "product.name"),
        (pb.Product(gtin="00614141123452", name="other owner", brand_owner_gln="0614141000012"), "product.brand_owner_gln"),
    ],
)
async def test_bad_input_is_invalid_argument_and_writes_nothing(tmp_path, database_dsn, product, field):
    async with Registry(tmp_path, database_dsn) as registry:
        height_before = await registry.engine.latest_height()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.CreateProduct(pb.CreateProductRequest(product=product), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in errors.error_from_rpc(caught.value).field_violations] == [field]
        assert _table(database_dsn) == []
        assert not registry.engine.mempool
        for height in range(1, await registry.engine.latest_height() + 1):
            assert not (await registry.engine.block(height)).txs, f"block {height} carries a transaction"
        assert height_before <= await registry.engine.latest_height()


async def _commission(stub, **fields) -> tuple[list[int], pb.CommissionedBatch]:
    stages, batch = [], None
    async for reply in stub.CommissionItems(pb.CommissionItemsRequest(**fields), timeout=120):
        if reply.HasField("progress"):
            stages.append(reply.progress.stage)
        else:
            batch = reply.batch
    return stages, batch


async def test_commissioning_issues_serials_commits_their_root_and_projects_items(tmp_path, database_dsn, postgres_cluster):
    from shelfproof.gs1.serials import ALPHABET
    from shelfproof.ledger.proofs.merkle import MerkleTree
    from shelfproof.ledger.v1 import ledger_pb2 as lpb
    from shelfproof.ledger.v1 import state_pb2 as st

    async with Registry(tmp_path, database_dsn) as registry:
        stub = registry.stub
        await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=VALID_GTINS[0], name="Olive oil")), timeout=20)
        stages, batch = await _commission(stub, gtin=VALID_GTINS[0], lot="L2026-11", expiry="2028-06-30", count=20_000, request_id="c-1")
        P = pb.CommissionProgress
        assert stages == [P.STAGE_SERIALS_GENERATED, P.STAGE_CONTENT_STORED, P.STAGE_QUERYABLE]
        assert (batch.count, batch.lot, batch.expiry) == (20_000, "L2026-11", "2028-06-30")

        with psycopg.connect(database_dsn) as conn:
            serials = [r[0] for r in conn.execute("SELECT serial FROM items WHERE batch_id = %s ORDER BY leaf_index", (batch.batch_id,))]
        assert len(serials) == len(set(serials)) == 20_000
        assert all(len(s) == 12 and set(s.encode()) <= set(ALPHABET) for s in serials)
        assert MerkleTree.from_items([s.encode() for s in serials]).root == batch.serials_merkle_root

        # The ledger committed the same root (every validator saw it), provably.
        ledger = ledger_pb2_grpc.LedgerServiceStub(registry.ledger_channel)
        answer = await ledger.Query(lpb.QueryRequest(store="batches", key=batch.batch_id.encode(), prove=True), timeout=10)
        committed = st.BatchRecord.FromString(answer.value).batch
        assert committed.serials_merkle_root == batch.serials_merkle_root and committed.count == 20_000

        # Retrying with the same request id returns the same batch without a second one.
        _, again = await _commission(stub, gtin=VALID_GTINS[0], lot="L2026-11", expiry="2028-06-30", count=20_000, request_id="c-1")
        assert again == batch
        with psycopg.connect(database_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 1

        for fields, code in (
            (dict(gtin=VALID_GTINS[0], lot="bad lot with spaces", count=5), grpc.StatusCode.INVALID_ARGUMENT),
            (dict(gtin=VALID_GTINS[0], lot="L1", count=0), grpc.StatusCode.INVALID_ARGUMENT),
            (dict(gtin=VALID_GTINS[0], lot="L1", count=5, expiry="2028-13-01"), grpc.StatusCode.INVALID_ARGUMENT),
            (dict(gtin=VALID_GTINS[1], lot="L1", count=5), grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _commission(stub, **fields)
            assert caught.value.code() == code, fields


async def test_recalls_commit_provably_and_stream_resumably(tmp_path, database_dsn):
    from shelfproof.ledger.v1 import ledger_pb2 as lpb

    async with Registry(tmp_path, database_dsn) as registry:
        stub = registry.stub
        for gtin in VALID_GTINS[:2]:
            await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(gtin=gtin, name="p")), timeout=20)
        subscriber = stub.StreamRecalls(pb.StreamRecallsRequest(gtins=[VALID_GTINS[0]]), timeout=60)
        first = (await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[0], lot="L1", reason="glass", request_id="r1"), timeout=20)).recall
        assert (first.gtin, first.lot, first.reason) == (VALID_GTINS[0], "L1", "glass") and first.ledger_ref.height > 0
        again = (await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[0], lot="L1", reason="glass", request_id="r1"), timeout=20)).recall
        assert again == first
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[0], lot="L1", reason="again"), timeout=20)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[1], lot="L9", reason="other product"), timeout=20)
        second = (await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[0], lot="L2", reason="label"), timeout=20)).recall
        # The live subscriber (filtered to one GTIN) gets both recalls of that GTIN, in order.
        pushed = [(await subscriber.read()).recall for _ in range(2)]
        subscriber.cancel()
        assert [(r.lot, r.ledger_ref.height) for r in pushed] == [("L1", first.ledger_ref.height), ("L2", second.ledger_ref.height)]
        # Resuming from after the first recall replays only what came later.
        resumed = stub.StreamRecalls(pb.StreamRecallsRequest(from_height=first.ledger_ref.height + 1), timeout=30)
        later = [(await resumed.read()).recall for _ in range(2)]
        resumed.cancel()
        assert [r.lot for r in later] == ["L9", "L2"]
        # The recall is a present key on the ledger, provable.
        ledger = ledger_pb2_grpc.LedgerServiceStub(registry.ledger_channel)
        answer = await ledger.Query(lpb.QueryRequest(store="recalls", key=f"{VALID_GTINS[0]}/L1".encode(), prove=True), timeout=10)
        assert answer.found and len(answer.proof_ops) == 3
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RecallLot(pb.RecallLotRequest(gtin=VALID_GTINS[0], lot="has space", reason="x"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_locations_validate_gln_and_page(tmp_path, database_dsn):
    glns = ["0614141000029", "0614141000036", "0614141000043"]
    async with Registry(tmp_path, database_dsn) as registry:
        stub = registry.stub
        for gln in glns:
            created = (await stub.CreateLocation(pb.CreateLocationRequest(
                location=pb.Location(gln=gln, name=f"site {gln}", city="Köln", country_code="DE")), timeout=20)).location
            assert created.organization_gln == DEMO_BRAND_GLN and created.ledger_ref.height > 0
        assert (await stub.GetLocation(pb.GetLocationRequest(gln=glns[1]), timeout=5)).location.name == f"site {glns[1]}"
        first = await stub.ListLocations(pb.ListLocationsRequest(page_size=2), timeout=5)
        second = await stub.ListLocations(pb.ListLocationsRequest(page_size=2, page_token=first.next_page_token), timeout=5)
        assert [l.gln for l in first.locations] + [l.gln for l in second.locations] == glns and not second.next_page_token
        for location, field in (
            (pb.Location(gln="0614141000028", name="bad check digit"), "location.gln"),
            (pb.Location(gln="0614141000050", name="x", country_code="Germany"), "location.country_code"),
            (pb.Location(gln="0614141000050", name=""), "location.name"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateLocation(pb.CreateLocationRequest(location=location), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [v.field for v in errors.error_from_rpc(caught.value).field_violations] == [field]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateLocation(pb.CreateLocationRequest(location=pb.Location(gln=glns[0], name="dup")), timeout=20)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListLocations(pb.ListLocationsRequest(page_token="garbage!"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_organizations_come_from_the_ledger_and_need_the_consortium_role(tmp_path, database_dsn):
    async with Registry(tmp_path, database_dsn) as registry:
        brand = (await registry.stub.GetOrganization(pb.GetOrganizationRequest(gln=DEMO_BRAND_GLN), timeout=10)).organization
        assert (brand.gln, brand.name, brand.registered_height) == (DEMO_BRAND_GLN, "brand", 0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.GetOrganization(pb.GetOrganizationRequest(gln="0614141000012"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # The registry signs as a brand agent: registering members is the consortium's permission.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.CreateOrganization(pb.CreateOrganizationRequest(
                organization=pb.Organization(gln="0614141000012", name="Retailer")), timeout=20)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.stub.GetOrganization(pb.GetOrganizationRequest(gln="0614141000013"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
