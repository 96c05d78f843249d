"""Typed, synchronous gRPC clients for the console (Streamlit runs pages as plain functions): every
call has a deadline, and a person's decisions are signed here with that person's key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from nacl.signing import SigningKey
from tendermint.types import types_pb2, validator_pb2

from shelfproof.ledger.proofs import light
from shelfproof.ledger.proofs.merkle import keypath_for
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from shelfproof.planner.v1 import planner_pb2 as ppb
from shelfproof.planner.v1 import planner_pb2_grpc
from shelfproof.pricing.v1 import pricing_pb2 as pricepb
from shelfproof.pricing.v1 import pricing_pb2_grpc
from shelfproof.product.v1 import alerts_pb2 as alpb
from shelfproof.product.v1 import alerts_pb2_grpc, events_pb2_grpc, labels_pb2_grpc, product_pb2_grpc
from shelfproof.product.v1 import events_pb2 as epb
from shelfproof.product.v1 import labels_pb2 as lapb
from shelfproof.product.v1 import product_pb2 as prpb
from shelfproof.runtime.server import MAX_MESSAGE_BYTES
from shelfproof.runtime.settings import TlsSettings

READ_S = 10.0
WRITE_S = 30.0
MAX_PAGES = 40  # a page of the console reads at most this many pages of a list


@dataclass(frozen=True)
class Addresses:
    ledger: str = "127.0.0.1:50051"
    registry: str = "127.0.0.1:50052"
    planner: str = "127.0.0.1:50053"
    pricing: str = "127.0.0.1:50054"


def _channel(target: str, tls: TlsSettings | None = None) -> grpc.Channel:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 0),
    ]
    if tls is not None and tls.enabled and tls.key_file and tls.ca_file:  # the console's certificate (runtime/tls.py)
        from shelfproof.runtime.tls import channel_credentials

        return grpc.secure_channel(target, channel_credentials(tls.cert_file, tls.key_file, tls.ca_file), options=options)
    return grpc.insecure_channel(target, options=options)


@dataclass(frozen=True)
class VerifiedProof:
    store: str
    key: str
    height: int
    app_hash: bytes
    validators_hash: bytes
    signed_power: int
    total_power: int
    value: bytes


@dataclass
class Clients:
    """One channel per service, shared by every session of the console process."""

    addresses: Addresses
    _channels: list[grpc.Channel] = field(default_factory=list)
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        where = self.addresses
        ledger, registry, planner, pricing = (
            _channel(a, self.tls) for a in (where.ledger, where.registry, where.planner, where.pricing)
        )
        self._channels = [ledger, registry, planner, pricing]
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(ledger)
        self.products = product_pb2_grpc.ProductServiceStub(registry)
        self.events = events_pb2_grpc.EventServiceStub(registry)
        self.labels = labels_pb2_grpc.LabelServiceStub(registry)
        self.alerts = alerts_pb2_grpc.AlertServiceStub(registry)
        self.planner = planner_pb2_grpc.PlannerServiceStub(planner)
        self.pricing = pricing_pb2_grpc.PricingServiceStub(pricing)
        self._chain_id = ""

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    # --- ledger -------------------------------------------------------------------------------------

    def status(self) -> lpb.GetLedgerStatusResponse:
        return self.ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=READ_S)

    def chain_id(self) -> str:
        if not self._chain_id:
            self._chain_id = self.status().chain_id
        return self._chain_id

    def block(self, height: int = 0) -> lpb.GetBlockResponse:
        return self.ledger.GetBlock(lpb.GetBlockRequest(height=height), timeout=READ_S)

    def query(self, store: str, key: str) -> bytes | None:
        reply = self.ledger.Query(lpb.QueryRequest(store=store, key=key.encode()), timeout=READ_S)
        return reply.value if reply.found else None

    def query_many(self, keys: list[tuple[str, str]]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for start in range(0, len(keys), 256):
            chunk = keys[start:start + 256]
            reply = self.ledger.QueryMany(lpb.QueryManyRequest(keys=[lpb.StoreKey(store=s, key=k.encode()) for s, k in chunk]), timeout=READ_S)
            values += [v.value if v.found else None for v in reply.values]
        return values

    def organization_names(self, glns: set[str]) -> dict[str, str]:
        """GLN -> the organisation's registered name, for the GLNs that are organisations."""
        wanted = sorted(glns)
        return {gln: st.OrganizationRecord.FromString(value).name
                for gln, value in zip(wanted, self.query_many([("orgs", g) for g in wanted])) if value}

    def content(self, sha256: bytes) -> bytes:
        return self.ledger.GetContent(lpb.GetContentRequest(sha256=sha256), timeout=READ_S).content

    def transactions_since(self, from_height: int, *, limit: int = 500, wait_s: float = 1.0) -> list[lpb.TransactionResult]:
        """Committed transactions from ``from_height`` on: at most ``limit``, and whatever arrives
        within ``wait_s`` (the stream follows the ledger forever, so a read is bounded in time)."""
        stream = self.ledger.StreamCommittedTransactions(
            lpb.StreamCommittedTransactionsRequest(from_height=max(1, from_height)), timeout=wait_s
        )
        return [reply.result for reply in _bounded(stream, limit)]

    def prove(self, store: str, key: str, trusted_validator_hashes: set[bytes] | None = None) -> VerifiedProof:
        """Read ``store/key`` with its proof and check it here: the header's commit signatures by its
        validator set, the set against the trusted hashes when given, the value's path to the app hash."""
        reply = self.ledger.Query(lpb.QueryRequest(store=store, key=key.encode(), prove=True), timeout=READ_S)
        if not reply.found:
            raise LookupError(f"{store}/{key} is not on the ledger (absent keys have no inclusion proof)")
        header = types_pb2.SignedHeader.FromString(reply.signed_header)
        validators = validator_pb2.ValidatorSet.FromString(reply.validator_set)
        check = light.verify_query(
            self.chain_id(), reply.proof_ops, keypath_for(store, key.encode()), reply.value, header, validators, query_height=reply.height
        )
        validators_hash = header.header.validators_hash
        if trusted_validator_hashes is not None and validators_hash not in trusted_validator_hashes:
            raise light.LightVerificationError("the header is signed by a validator set this console does not trust")
        return VerifiedProof(store, key, reply.height, header.header.app_hash, validators_hash,
                             check.signed_power, check.total_power, reply.value)

    def signer_for(self, agent_id: str, key: SigningKey) -> AccountSigner:
        """The person's signer with the next nonce the ledger expects."""
        signer = AccountSigner(self.chain_id(), agent_id, key)
        agent = self.query("agents", agent_id)
        if agent is None:
            raise LookupError(f"agent {agent_id} is not on the ledger")
        signer.next_nonce = st.AgentRecord.FromString(agent).nonce + 1
        return signer

    # --- registry -----------------------------------------------------------------------------------

    def _pages(self, method, request, items: str) -> list:
        out = []
        for _ in range(MAX_PAGES):
            reply = method(request, timeout=READ_S)
            out += list(getattr(reply, items))
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
        return out

    def locations(self) -> list[prpb.Location]:
        return self._pages(self.products.ListLocations, prpb.ListLocationsRequest(page_size=200), "locations")

    def products_list(self) -> list[prpb.Product]:
        return self._pages(self.products.ListProducts, prpb.ListProductsRequest(page_size=200), "products")

    def positions(self, location_gln: str = "", gtin: str = "") -> list[epb.InventoryPosition]:
        return self._pages(
            self.events.ListInventoryPositions, epb.ListInventoryPositionsRequest(location_gln=location_gln, gtin=gtin, page_size=500), "positions"
        )

    def events_list(self, *, gtin: str = "", serial: str = "", location_gln: str = "", max_pages: int = MAX_PAGES) -> list[epb.Event]:
        request = epb.ListEventsRequest(filter=epb.EventFilter(gtin=gtin, serial=serial, location_gln=location_gln), page_size=500)
        out = []
        for _ in range(max_pages):
            reply = self.events.ListEvents(request, timeout=READ_S)
            out += list(reply.events)
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
        return out

    def create_product(self, product: prpb.Product, request_id: str) -> prpb.Product:
        return self.products.CreateProduct(prpb.CreateProductRequest(product=product, request_id=request_id), timeout=WRITE_S).product

    def commission(self, gtin: str, lot: str, expiry: str, count: int, request_id: str) -> Iterator[prpb.CommissionItemsResponse]:
        request = prpb.CommissionItemsRequest(gtin=gtin, lot=lot, expiry=expiry, count=count, request_id=request_id)
        yield from self.products.CommissionItems(request, timeout=120)

    def label_sheet(self, batch_id: str, page: int = 1) -> lapb.PrintLabelSheetResponse:
        return self.labels.PrintLabelSheet(lapb.PrintLabelSheetRequest(batch_id=batch_id, page=page), timeout=WRITE_S)

    def item_label(self, gtin: str, serial: str) -> lapb.GetItemLabelResponse:
        return self.labels.GetItemLabel(lapb.GetItemLabelRequest(gtin=gtin, serial=serial, format=lapb.LABEL_FORMAT_URI), timeout=READ_S)

    def void(self, gtin: str, serials: list[str], reason: str, request_id: str) -> lapb.VoidLabelsResponse:
        return self.labels.VoidLabels(lapb.VoidLabelsRequest(gtin=gtin, serials=serials, reason=reason, request_id=request_id), timeout=WRITE_S)

    def recall(self, gtin: str, lot: str, reason: str, request_id: str) -> prpb.Recall:
        return self.products.RecallLot(prpb.RecallLotRequest(gtin=gtin, lot=lot, reason=reason, request_id=request_id), timeout=WRITE_S).recall

    def capture(self, document: bytes, request_id: str) -> epb.CaptureEventsResponse:
        return self.events.CaptureEvents(epb.CaptureEventsRequest(epcis_document=document, request_id=request_id), timeout=120)

    def alerts_since(self, from_height: int, *, brand_owner_gln: str = "", limit: int = 2_000, wait_s: float = 1.5) -> list[alpb.Alert]:
        """Counterfeit alerts the ledger derived from scans, from ``from_height`` on (bounded like
        ``transactions_since``: the stream follows the ledger forever)."""
        stream = self.alerts.StreamAlerts(alpb.StreamAlertsRequest(from_height=max(0, from_height), brand_owner_gln=brand_owner_gln),
                                          timeout=wait_s)
        return [reply.alert for reply in _bounded(stream, limit)]

    def clear_compromise(self, gtin: str, serial: str, reason: str) -> int:
        """The brand clears a false alarm on one of its codes (the registry signs as the brand); the block."""
        reply = self.alerts.ClearCompromise(alpb.ClearCompromiseRequest(gtin=gtin, serial=serial, reason=reason), timeout=WRITE_S)
        return reply.ledger_ref.height

    # --- pricing ------------------------------------------------------------------------------------

    def prices(self, location_gln: str = "") -> list[pricepb.Price]:
        return self._pages(self.pricing.ListPrices, pricepb.ListPricesRequest(location_gln=location_gln, page_size=500), "prices")

    def price(self, gtin: str, location_gln: str, quantity: int = 1) -> pricepb.PricedLine:
        return self.pricing.GetPrice(pricepb.GetPriceRequest(gtin=gtin, location_gln=location_gln, quantity=quantity), timeout=READ_S).line

    def price_history(self, gtin: str, location_gln: str, page_size: int = 50) -> list[pricepb.PriceEvent]:
        request = pricepb.ListPriceHistoryRequest(gtin=gtin, location_gln=location_gln, page_size=page_size)
        return list(self.pricing.ListPriceHistory(request, timeout=READ_S).events)

    def price_events(self, location_glns: list[str], *, from_height: int = 1, limit: int = 5_000, wait_s: float = 1.0) -> list[pricepb.PriceEvent]:
        """Committed price events at these locations in ledger order (bounded in time and count)."""
        stream = self.pricing.StreamPriceChanges(
            pricepb.StreamPriceChangesRequest(from_height=from_height, location_glns=location_glns[:100]), timeout=wait_s)
        return [reply.event for reply in _bounded(stream, limit)]

    def propose_price(self, change: pricepb.PriceChange, request_id: str, effective_unix_s: int = 0) -> str:
        """A base price change now, or at ``effective_unix_s``; the ledger checks the guardrails. Answers
        what was recorded, as a sentence."""
        if effective_unix_s:
            request = pricepb.SchedulePriceChangeRequest(change=change, request_id=request_id)
            request.effective_time.FromSeconds(effective_unix_s)
            reply = self.pricing.SchedulePriceChange(request, timeout=WRITE_S)
            return f"scheduled as change {reply.change_id} in block {reply.ledger_ref.height}"
        price = self.pricing.ProposePriceChange(pricepb.ProposePriceChangeRequest(change=change, request_id=request_id), timeout=WRITE_S).price
        return f"the price is now {price.amount.currency_code} {price.amount.amount_minor / 100:,.2f} (block {price.ledger_ref.height})"

    # --- planner ------------------------------------------------------------------------------------

    def drafts(self, *, state: int = 0, approver_agent_id: str = "") -> list[ppb.Draft]:
        return self._pages(
            self.planner.ListDrafts, ppb.ListDraftsRequest(state=state, approver_agent_id=approver_agent_id, page_size=200), "drafts"
        )

    def purchase_orders(self, *, buyer_gln: str = "", supplier_gln: str = "", state: int = 0) -> list[ppb.PurchaseOrder]:
        request = ppb.ListPurchaseOrdersRequest(buyer_gln=buyer_gln, supplier_gln=supplier_gln, state=state, page_size=200)
        return self._pages(self.planner.ListPurchaseOrders, request, "purchase_orders")

    def purchase_order(self, order_id: str) -> ppb.PurchaseOrder:
        return self.planner.GetPurchaseOrder(ppb.GetPurchaseOrderRequest(order_id=order_id), timeout=READ_S).purchase_order

    def acknowledge(self, agent_id: str, key: SigningKey, order_id: str, *, accept: bool, reason: str = "") -> ppb.PurchaseOrder:
        """The supplier's person answers an order with a transaction signed by that person's key (the
        planner relays it; the ledger checks the person is the supplier's)."""
        status = txpb.ORDER_RESPONSE_STATUS_ACCEPTED if accept else txpb.ORDER_RESPONSE_STATUS_REJECTED
        body = txpb.TransactionBody(acknowledge_purchase_order=txpb.AcknowledgePurchaseOrder(order_id=order_id, status=status, reason=reason))
        signed = self.signer_for(agent_id, key).sign(body)
        request = ppb.AcknowledgePurchaseOrderRequest(order_id=order_id, signed_transaction=signed)
        return self.planner.AcknowledgePurchaseOrder(request, timeout=WRITE_S).purchase_order

    def decide(self, agent_id: str, key: SigningKey, draft_ids: list[str], *, approve: bool, reason: str = "") -> list[ppb.Draft | Exception]:
        """Approve (or reject) each draft with a transaction the person signed; one answer per draft."""
        signer = self.signer_for(agent_id, key)
        out: list[ppb.Draft | Exception] = []
        for draft_id in draft_ids:
            if approve:
                body = txpb.TransactionBody(approve_draft=txpb.ApproveDraft(draft_id=draft_id))
            else:
                body = txpb.TransactionBody(reject_draft=txpb.RejectDraft(draft_id=draft_id, reason=reason or "rejected in the console"))
            signed = signer.sign(body)
            try:
                if approve:
                    reply = self.planner.ApproveDraft(ppb.ApproveDraftRequest(draft_id=draft_id, signed_transaction=signed), timeout=WRITE_S)
                else:
                    reply = self.planner.RejectDraft(ppb.RejectDraftRequest(draft_id=draft_id, signed_transaction=signed, reason=reason), timeout=WRITE_S)
                out.append(reply.draft)
            except grpc.RpcError as err:
                out.append(err)
                signer = self.signer_for(agent_id, key)  # a refused transaction did not use its nonce
        return out


def _bounded(stream, limit: int) -> list:
    """What a never-ending server stream sent before its deadline (or its first ``limit`` replies)."""
    out = []
    try:
        for reply in stream:
            out.append(reply)
            if len(out) >= limit:
                break
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        stream.cancel()
    return out


def block_time(block: lpb.GetBlockResponse) -> float:
    return block.time.seconds + block.time.nanos / 1e9 if block.HasField("time") else time.time()
