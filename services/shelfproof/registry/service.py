"""``shelfproof.product.v1.ProductService``: writes go through the ledger, reads come from PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from shelfproof.common.v1 import common_pb2
from shelfproof.db.request_ids import earlier_write, remember_write
from shelfproof.gs1.keys import CSET82_VALUE
from shelfproof.gs1.serials import generate_serials
from shelfproof.ledger.client import LedgerClient, ledger_error
from shelfproof.ledger.proofs.merkle import MerkleTree
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.product.v1 import product_pb2 as pb
from shelfproof.product.v1 import product_pb2_grpc
from shelfproof.registry.projector import RegistryProjector
from shelfproof.runtime.client import call
from shelfproof.runtime.errors import (
    AlreadyExists,
    DependencyUnavailable,
    FieldViolation,
    InvalidArgument,
    LedgerRejected,
    NotFound,
    PermissionDenied,
)
from shelfproof.runtime.fields import gln_field, gtin_field, next_page_token, page_request, timestamp_of
from shelfproof.runtime.server import ServiceBinding

log = logging.getLogger(__name__)

MAX_COMMISSION = 1_000_000
PRODUCT_CACHE_SIZE = 100_000
UPDATABLE = ("name", "brand", "category", "net_content", "attributes")
_PRODUCT_COLUMNS = (
    "gtin, name, brand, category, net_content, attributes, brand_owner_gln, create_time, update_time, "
    "ledger_height, tx_hash"
)


def _product(row: dict) -> pb.Product:
    return pb.Product(
        gtin=row["gtin"],
        name=row["name"],
        brand=row["brand"],
        category=row["category"],
        net_content=row["net_content"],
        attributes=row["attributes"],
        brand_owner_gln=row["brand_owner_gln"],
        create_time=timestamp_of(row["create_time"]),
        update_time=timestamp_of(row["update_time"]),
        ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"])),
    )


def _location(row: dict) -> pb.Location:
    return pb.Location(
        gln=row["gln"], organization_gln=row["organization_gln"], name=row["name"], street=row["street"],
        city=row["city"], postal_code=row["postal_code"], country_code=row["country_code"] or "",
        ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"])),
    )


def _check_fields(product: pb.Product, paths: tuple[str, ...]) -> list[FieldViolation]:
    limits = {"name": 256, "brand": 256, "category": 256, "net_content": 64}
    violations = []
    for path in paths:
        if path == "attributes":
            if len(product.attributes) > 64:
                violations.append(FieldViolation("product.attributes", "at most 64 attributes"))
            for key, value in product.attributes.items():
                if not key or len(key) > 64 or len(value) > 256:
                    violations.append(FieldViolation(f"product.attributes[{key!r}]", "key 1-64, value up to 256 characters"))
        else:
            value = getattr(product, path)
            if path == "name" and not value.strip():
                violations.append(FieldViolation("product.name", "required"))
            if len(value) > limits[path]:
                violations.append(FieldViolation(f"product.{path}", f"at most {limits[path]} characters"))
    return violations


def _register_body(product: pb.Product, gtin: str) -> txpb.RegisterProduct:
    return txpb.RegisterProduct(
        gtin=gtin,
        name=product.name,
        brand=product.brand,
        category=product.category,
        net_content=product.net_content,
        attributes=[txpb.Attribute(key=k, value=v) for k, v in sorted(product.attributes.items())],
    )


class ProductService(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, ledger: LedgerClient, projector: RegistryProjector, organization_gln: str) -> None:
        self.pool = pool
        self.ledger = ledger
        self.projector = projector
        self.organization_gln = organization_gln
        # GetProduct is the hot read: products change rarely, and this process's projector evicts a
        # product the moment its update is applied, so the cache is never staler than the database.
        self._products: dict[str, pb.Product] = {}
        self._changes = 0  # bumped on every eviction: a read that raced an update is not cached
        projector.product_changed.append(self._evict)

    def _evict(self, gtin: str) -> None:
        self._changes += 1
        self._products.pop(gtin, None)

    def binding(self) -> ServiceBinding:
        return ServiceBinding(
            pb.DESCRIPTOR.services_by_name["ProductService"].full_name,
            lambda server: product_pb2_grpc.add_ProductServiceServicer_to_server(self, server),
        )

    async def _row(self, gtin: str) -> dict | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE gtin = %s", (gtin,))
            return await cur.fetchone()

    async def _replayed(self, request_id: str, method: str) -> str | None:
        """The resource a previous call with this request id wrote, if any."""
        earlier = await earlier_write(self.pool, request_id, method)
        return earlier[0] if earlier else None

    async def _commit(
        self, body: txpb.TransactionBody, request_id: str, method: str, resource: str, timeout_s: float = 10.0
    ) -> None:
        try:
            result = await self.ledger.submit(body)
        except LedgerRejected as err:
            raise ledger_error(err) from err
        await remember_write(self.pool, request_id, method, resource, result.tx_hash)
        if not await self.projector.wait_for(result.height, result.index, timeout_s):
            raise DependencyUnavailable("committed on the ledger, but the query model is behind; read again shortly")

    # --- organizations (the ledger's own records) -------------------------------------------------

    async def _organization(self, gln: str) -> pb.Organization | None:
        answer = await call(self.ledger.stub.Query, lpb.QueryRequest(store="orgs", key=gln.encode()), idempotent=True)
        if not answer.found:
            return None
        record = st.OrganizationRecord.FromString(answer.value)
        return pb.Organization(gln=record.gln, name=record.name, registered_height=record.registered_height)

    async def CreateOrganization(self, request: pb.CreateOrganizationRequest, context) -> pb.CreateOrganizationResponse:
        gln = gln_field(request.organization.gln, "organization.gln")
        name = request.organization.name
        if not name.strip() or len(name) > 256:
            raise InvalidArgument("organization is invalid", field_violations=[FieldViolation("organization.name", "required, at most 256 characters")])
        if await self._replayed(request.request_id, "CreateOrganization") is None:
            body = txpb.TransactionBody(register_organization=txpb.RegisterOrganization(gln=gln, name=name))
            try:
                await self.ledger.submit(body)
            except LedgerRejected as err:
                raise ledger_error(err) from err
            await remember_write(self.pool, request.request_id, "CreateOrganization", gln, b"")
        return pb.CreateOrganizationResponse(organization=await self._organization(gln))

    async def GetOrganization(self, request: pb.GetOrganizationRequest, context) -> pb.GetOrganizationResponse:
        gln = gln_field(request.gln, "gln")
        organization = await self._organization(gln)
        if organization is None:
            raise NotFound(f"organization {gln} is not registered")
        return pb.GetOrganizationResponse(organization=organization)

    # --- locations ------------------------------------------------------------------------------

    async def _location_row(self, gln: str) -> dict | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM locations WHERE gln = %s", (gln,))
            return await cur.fetchone()

    async def CreateLocation(self, request: pb.CreateLocationRequest, context) -> pb.CreateLocationResponse:
        location = request.location
        gln = gln_field(location.gln, "location.gln")
        violations = []
        if not location.name.strip() or len(location.name) > 256:
            violations.append(FieldViolation("location.name", "required, at most 256 characters"))
        for field in ("street", "city", "postal_code"):
            if len(getattr(location, field)) > 128:
                violations.append(FieldViolation(f"location.{field}", "at most 128 characters"))
        if location.country_code and not (len(location.country_code) == 2 and location.country_code.isalpha() and location.country_code.isupper()):
            violations.append(FieldViolation("location.country_code", "ISO 3166-1 alpha-2, e.g. DE"))
        if location.organization_gln and location.organization_gln != self.organization_gln:
            violations.append(FieldViolation("location.organization_gln", f"this registry registers for {self.organization_gln}"))
        if violations:
            raise InvalidArgument("location is invalid", field_violations=violations)
        if await self._replayed(request.request_id, "CreateLocation") is None:
            if await self._location_row(gln) is not None:
                raise AlreadyExists(f"location {gln} is already registered")
            body = txpb.TransactionBody(
                register_location=txpb.RegisterLocation(
                    gln=gln, organization_gln=self.organization_gln, name=location.name, street=location.street,
                    city=location.city, postal_code=location.postal_code, country_code=location.country_code,
                )
            )
            await self._commit(body, request.request_id, "CreateLocation", gln)
        return pb.CreateLocationResponse(location=_location(await self._location_row(gln)))

    async def GetLocation(self, request: pb.GetLocationRequest, context) -> pb.GetLocationResponse:
        gln = gln_field(request.gln, "gln")
        row = await self._location_row(gln)
        if row is None:
            raise NotFound(f"location {gln} is not registered")
        return pb.GetLocationResponse(location=_location(row))

    async def ListLocations(self, request: pb.ListLocationsRequest, context) -> pb.ListLocationsResponse:
        size, after = page_request(request.page_size, request.page_token, gln_field)
        conditions, values = ["gln > %s"], [after]
        if request.organization_gln:
            conditions.append("organization_gln = %s")
            values.append(request.organization_gln)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT * FROM locations WHERE {' AND '.join(conditions)} ORDER BY gln LIMIT %s", (*values, size + 1)
            )
            rows = await cur.fetchall()
        return pb.ListLocationsResponse(
            locations=[_location(r) for r in rows[:size]], next_page_token=next_page_token(rows, size, "gln")
        )

    # --- products -------------------------------------------------------------------------------

    async def CreateProduct(self, request: pb.CreateProductRequest, context) -> pb.CreateProductResponse:
        gtin = gtin_field(request.product.gtin, "product.gtin")
        violations = _check_fields(request.product, UPDATABLE)
        if request.product.brand_owner_gln and request.product.brand_owner_gln != self.organization_gln:
            violations.append(FieldViolation("product.brand_owner_gln", f"this registry registers for {self.organization_gln}"))
        if violations:
            raise InvalidArgument("product is invalid", field_violations=violations)
        if await self._replayed(request.request_id, "CreateProduct") is None:
            if await self._row(gtin) is not None:
                raise AlreadyExists(f"product {gtin} is already registered")
            await self._commit(
                txpb.TransactionBody(register_product=_register_body(request.product, gtin)),
                request.request_id, "CreateProduct", gtin,
            )
        row = await self._row(gtin)
        if row is None:
            raise NotFound(f"product {gtin} is not in the query model")
        return pb.CreateProductResponse(product=_product(row))

    async def GetProduct(self, request: pb.GetProductRequest, context) -> pb.GetProductResponse:
        gtin = gtin_field(request.gtin, "gtin")
        product = self._products.get(gtin)
        if product is None:
            changes = self._changes
            row = await self._row(gtin)
            if row is None:
                raise NotFound(f"product {gtin} is not registered")
            product = _product(row)
            if changes == self._changes:
                if len(self._products) >= PRODUCT_CACHE_SIZE:
                    self._products.pop(next(iter(self._products)))
                self._products[gtin] = product
        return pb.GetProductResponse(product=product)

    async def ListProducts(self, request: pb.ListProductsRequest, context) -> pb.ListProductsResponse:
        size, after = page_request(request.page_size, request.page_token, gtin_field)
        conditions, values = ["gtin > %s"], [after]
        if request.brand_owner_gln:
            conditions.append("brand_owner_gln = %s")
            values.append(request.brand_owner_gln)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE {' AND '.join(conditions)} ORDER BY gtin LIMIT %s",
                (*values, size + 1),
            )
            rows = await cur.fetchall()
        return pb.ListProductsResponse(
            products=[_product(r) for r in rows[:size]], next_page_token=next_page_token(rows, size, "gtin")
        )

    async def CommissionItems(self, request: pb.CommissionItemsRequest, context):
        gtin = gtin_field(request.gtin, "gtin")
        violations = []
        if not CSET82_VALUE.match(request.lot):
            violations.append(FieldViolation("lot", "1-20 GS1 CSET 82 characters"))
        if request.expiry:
            try:
                date.fromisoformat(request.expiry)
            except ValueError:
                violations.append(FieldViolation("expiry", "a date YYYY-MM-DD"))
        if not 1 <= request.count <= MAX_COMMISSION:
            violations.append(FieldViolation("count", f"1 to {MAX_COMMISSION:,}"))
        if violations:
            raise InvalidArgument("commissioning request is invalid", field_violations=violations)
        product = await self._row(gtin)
        if product is None:
            raise NotFound(f"product {gtin} is not registered")
        if product["brand_owner_gln"] != self.organization_gln:
            raise PermissionDenied(f"{gtin} belongs to {product['brand_owner_gln']}, not {self.organization_gln}")
        batch_id = await self._replayed(request.request_id, "CommissionItems")
        if batch_id is None:
            serials = await asyncio.to_thread(generate_serials, request.count)
            yield pb.CommissionItemsResponse(progress=pb.CommissionProgress(stage=pb.CommissionProgress.STAGE_SERIALS_GENERATED, items=len(serials)))
            document = "\n".join(serials).encode("ascii")
            root, content_hash = await asyncio.gather(
                asyncio.to_thread(lambda: MerkleTree.from_items([s.encode() for s in serials]).root),
                self.ledger.put_content(document),
            )
            yield pb.CommissionItemsResponse(progress=pb.CommissionProgress(stage=pb.CommissionProgress.STAGE_CONTENT_STORED, items=len(serials)))
            batch_id = uuid.uuid4().hex
            body = txpb.TransactionBody(
                commission_batch=txpb.CommissionBatch(
                    batch_id=batch_id, gtin=gtin, lot=request.lot, expiry=request.expiry, count=request.count,
                    serials_merkle_root=root, serials_content_hash=content_hash,
                    expected_scans_per_item=request.expected_scans_per_item,
                )
            )
            await self._commit(body, request.request_id, "CommissionItems", batch_id, timeout_s=30 + request.count / 20_000)
            yield pb.CommissionItemsResponse(progress=pb.CommissionProgress(stage=pb.CommissionProgress.STAGE_QUERYABLE, items=len(serials)))
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM batches WHERE batch_id = %s", (batch_id,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"batch {batch_id} is not in the query model")
        yield pb.CommissionItemsResponse(
            batch=pb.CommissionedBatch(
                batch_id=row["batch_id"], gtin=row["gtin"], lot=row["lot"],
                expiry=row["expiry"].isoformat() if row["expiry"] else "", count=row["count"],
                serials_merkle_root=bytes(row["serials_merkle_root"]), serials_sha256=bytes(row["serials_sha256"]),
                ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"])),
            )
        )

    async def RecallLot(self, request: pb.RecallLotRequest, context) -> pb.RecallLotResponse:
        gtin = gtin_field(request.gtin, "gtin")
        violations = []
        if not CSET82_VALUE.match(request.lot):
            violations.append(FieldViolation("lot", "1-20 GS1 CSET 82 characters"))
        if not request.reason.strip() or len(request.reason) > 512:
            violations.append(FieldViolation("reason", "required, at most 512 characters"))
        if violations:
            raise InvalidArgument("recall is invalid", field_violations=violations)
        if await self._replayed(request.request_id, "RecallLot") is None:
            if await self._row(gtin) is None:
                raise NotFound(f"product {gtin} is not registered")
            body = txpb.TransactionBody(recall_lot=txpb.RecallLot(gtin=gtin, lot=request.lot, reason=request.reason))
            await self._commit(body, request.request_id, "RecallLot", f"{gtin}/{request.lot}")
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM recalls WHERE gtin = %s AND lot = %s", (gtin, request.lot))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"recall of {gtin} lot {request.lot} is not in the query model")
        return pb.RecallLotResponse(
            recall=pb.Recall(
                gtin=row["gtin"], lot=row["lot"], reason=row["reason"], recorded_by=row["recorded_by"],
                recall_time=timestamp_of(row["recall_time"]),
                ledger_ref=common_pb2.LedgerRef(height=row["ledger_height"], tx_hash=bytes(row["tx_hash"])),
            )
        )

    async def StreamRecalls(self, request: pb.StreamRecallsRequest, context):
        """Straight from the ledger's committed stream, so it resumes from any height."""
        if request.from_height < 0:
            raise InvalidArgument("from_height must be >= 0", field_violations=[FieldViolation("from_height", ">= 0")])
        wanted = {gtin_field(g, "gtins") for g in request.gtins}
        stream = self.ledger.stub.StreamCommittedTransactions(
            lpb.StreamCommittedTransactionsRequest(from_height=request.from_height)
        )
        try:
            async for item in stream:
                result = item.result
                signed = txpb.SignedTransaction.FromString(result.transaction)
                body = txpb.TransactionBody.FromString(signed.body)
                if body.WhichOneof("action") != "recall_lot" or (wanted and body.recall_lot.gtin not in wanted):
                    continue
                yield pb.StreamRecallsResponse(
                    recall=pb.Recall(
                        gtin=body.recall_lot.gtin, lot=body.recall_lot.lot, reason=body.recall_lot.reason,
                        recorded_by=signed.signer, recall_time=result.block_time,
                        ledger_ref=common_pb2.LedgerRef(height=result.height, tx_hash=result.tx_hash),
                    )
                )
        finally:
            stream.cancel()

    async def UpdateProduct(self, request: pb.UpdateProductRequest, context) -> pb.UpdateProductResponse:
        gtin = gtin_field(request.product.gtin, "product.gtin")
        paths = tuple(request.update_mask.paths)
        unknown = [p for p in paths if p not in UPDATABLE]
        if not paths or unknown:
            raise InvalidArgument(
                f"update_mask must name some of {', '.join(UPDATABLE)}",
                field_violations=[FieldViolation("update_mask", f"unknown or missing paths {unknown}")],
            )
        violations = _check_fields(request.product, paths)
        if violations:
            raise InvalidArgument("product is invalid", field_violations=violations)
        if await self._replayed(request.request_id, "UpdateProduct") is None:
            if await self._row(gtin) is None:
                raise NotFound(f"product {gtin} is not registered")
            body = txpb.TransactionBody(
                update_product=txpb.UpdateProduct(product=_register_body(request.product, gtin), update_paths=sorted(paths))
            )
            await self._commit(body, request.request_id, "UpdateProduct", gtin)
        return pb.UpdateProductResponse(product=_product(await self._row(gtin)))
