"""Provable item status, key fingerprints, scan claims and the many-key query, through ABCI in-process."""

from __future__ import annotations

import pytest
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.proofs import merkle
from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.core.tx import key_id_for
from shelfproof.ledger.signer import AccountSigner
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.ledger.v1 import transaction_pb2 as txpb
from tests.unit.test_ledger_app import BRAND, CHAIN, GTIN, OPERATOR, STORE_GLN, T0, _block, _body, _product, add_key_body, chain  # noqa: F401

pytestmark = pytest.mark.unit
HASH = "ni:///sha-256;{:064x}?ver=CBV2.0"


def commission_body(batch_id: str = "B1", lot: str = "L1") -> txpb.TransactionBody:
    return _body(commission_batch=txpb.CommissionBatch(
        batch_id=batch_id, gtin=GTIN, lot=lot, count=3, serials_merkle_root=bytes(32), serials_content_hash=bytes(32),
    ))


def _read(app: LedgerApplication, store: str, key: str, message):
    answer = app.query(abci.RequestQuery(path=f"/store/{store}/key", data=key.encode()))
    return message.FromString(answer.value) if answer.value else None


def _event(n: int, serials: list[str], step: str, disposition: str, gln: str = STORE_GLN) -> txpb.TransactionBody:
    return _body(record_event=txpb.RecordEvent(
        event_hash=HASH.format(n), event_type="ObjectEvent", biz_step=f"https://ref.gs1.org/cbv/BizStep-{step}",
        disposition=disposition, epcs=[f"https://id.gs1.org/01/{GTIN}/21/{s}" for s in serials] + ["urn:epc:id:sscc:0614141.1234567890"],
        biz_location_gln=gln,
    ))


def test_events_keep_each_items_provable_status_and_custody(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    assert _block(app, [brand.sign(_product())]) == [0]
    assert _block(app, [brand.sign(_event(1, ["A1", "A2"], "shipping", "in_transit"))], T0 + 100) == [0]
    assert _block(app, [brand.sign(_event(2, ["A1"], "retail_selling", "retail_sold"))], T0 + 200) == [0]
    a1 = _read(app, "items", f"{GTIN}/A1", st.ItemRecord)
    a2 = _read(app, "items", f"{GTIN}/A2", st.ItemRecord)
    assert [c.biz_step for c in a1.custody] == ["shipping", "retail_selling"] and a1.disposition == "retail_sold"
    assert a1.sold_unix_s == T0 + 200 and a1.custody[0].block_unix_s == T0 + 100 and a1.biz_location_gln == STORE_GLN
    assert a2.disposition == "in_transit" and a2.sold_unix_s == 0 and len(a2.custody) == 1
    # Only serialized items get a status key (the SSCC in the event does not).
    assert _read(app, "items", "00614141123452/1234567890", st.ItemRecord) is None
    for n in range(20):  # the custody list keeps the newest steps only
        _block(app, [brand.sign(_event(10 + n, ["A2"], "receiving", "in_progress"))])
    a2 = _read(app, "items", f"{GTIN}/A2", st.ItemRecord)
    assert len(a2.custody) == 16 and a2.custody[-1].event_hash == HASH.format(29)


def test_keys_are_indexed_by_fingerprint_and_revocation_shows(chain):
    app, genesis, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    fingerprint = key_id_for(bytes(brand.signing_key.verify_key))
    record = _read(app, "keys", fingerprint, st.KeyRecord)
    assert (record.agent_id, record.organization_gln, record.revoked) == (f"{BRAND}/admin-0", BRAND, False)
    from nacl.signing import SigningKey

    new_key = SigningKey.generate()
    new = AccountSigner(CHAIN, brand.agent_id, new_key)
    assert _block(app, [brand.sign(add_key_body(brand.agent_id, new, key_id="k2"))]) == [0]
    added = _read(app, "keys", key_id_for(bytes(new_key.verify_key)), st.KeyRecord)
    assert added.key_id == "k2" and not added.revoked
    assert _block(app, [brand.sign(_body(revoke_key=txpb.RevokeKey(agent_id=f"{BRAND}/admin-0", key_id="k2")))]) == [0]
    assert _read(app, "keys", key_id_for(bytes(new_key.verify_key)), st.KeyRecord).revoked
    # Another agent cannot claim a key that is already someone's.
    other = signers[f"{BRAND}/admin-1"]
    codes = _block(app, [other.sign(add_key_body(other.agent_id, AccountSigner(CHAIN, other.agent_id, new_key), key_id="stolen"))])
    assert codes != [0]


def test_first_scan_after_a_sale_claims_the_item_and_scans_elsewhere_are_counted(chain):
    app, _, signers = chain
    brand, verifier = signers[f"{BRAND}/admin-0"], signers[f"{OPERATOR}/verifier-0"]
    _block(app, [brand.sign(_product()), brand.sign(commission_body())])

    def scan(cell: str, at: int) -> txpb.TransactionBody:
        return _body(record_scans=txpb.RecordScans(scans=[txpb.Scan(gtin=GTIN, serial="A1", cell=cell, scan_unix_s=at)]))

    assert _block(app, [verifier.sign(scan("u33d", T0 + 10))], T0 + 20) == [0]  # before the sale: no claim
    assert _read(app, "scans", f"{GTIN}/A1", st.ScanRecord).claimed_unix_s == 0
    _block(app, [brand.sign(_event(1, ["A1"], "retail_selling", "retail_sold"))], T0 + 100)
    _block(app, [verifier.sign(scan("", T0 + 150))], T0 + 160)  # claimed without a cell: the claim stays cell-less,
    _block(app, [verifier.sign(scan("u33d", T0 + 170))], T0 + 180)  # later scans compare with the places before it
    _block(app, [verifier.sign(scan("u33d", T0 + 190))], T0 + 200)
    _block(app, [verifier.sign(scan("u09t", T0 + 210))], T0 + 220)
    record = _read(app, "scans", f"{GTIN}/A1", st.ScanRecord)
    assert (record.scans, record.claimed_unix_s, record.claimed_cell, record.scans_elsewhere_after_claim) == (5, T0 + 150, "", 1)
    assert [s.cell for s in record.sightings] == ["u33d", "u09t"] and record.last_cell == "u09t"


def test_query_many_proves_every_present_key_against_one_app_hash(chain):
    app, _, signers = chain
    brand = signers[f"{BRAND}/admin-0"]
    _block(app, [brand.sign(_product())])
    _block(app, [brand.sign(_event(1, ["A1"], "shipping", "in_transit"))])
    wanted = lpb.QueryManyRequest(keys=[
        lpb.StoreKey(store="products", key=GTIN.encode()), lpb.StoreKey(store="items", key=f"{GTIN}/A1".encode()),
        lpb.StoreKey(store="recalls", key=f"{GTIN}/L1".encode()), lpb.StoreKey(store="items", key=f"{GTIN}/A1".encode()),
    ])
    answer = app.query(abci.RequestQuery(path="/keys", data=wanted.SerializeToString(), prove=True))
    many = lpb.QueryManyResponse.FromString(answer.value)
    assert [(v.store, v.found) for v in many.values] == [("products", True), ("items", True), ("recalls", False), ("items", True)]
    for v in many.values:
        if v.found:
            merkle.verify_value_proof(v.proof_ops, app.app_hash, merkle.keypath_for(v.store, v.key), v.value)
        else:
            assert not v.value  # absent: proven by its neighbours (here an empty store)
            merkle.verify_absence_proof(v.proof_ops, app.app_hash, merkle.keypath_for(v.store, v.key))
    tampered = many.values[1]
    with pytest.raises(merkle.ProofError):
        merkle.verify_value_proof(tampered.proof_ops, app.app_hash, merkle.keypath_for("items", tampered.key), tampered.value + b"x")
    bad = app.query(abci.RequestQuery(path="/keys", data=lpb.QueryManyRequest(keys=[lpb.StoreKey(store="nope", key=b"k")]).SerializeToString()))
    assert bad.code != 0 and "unknown store" in bad.log
    assert app.query(abci.RequestQuery(path="/keys", data=b"\xff\xff")).code != 0
