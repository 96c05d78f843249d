"""Reading and checking ledger transactions: their hash, the bytes a signature covers, the one parser.

``parse`` is the one reader of a transaction's bytes. It accepts only the canonical encoding: the
deterministic re-encoding of the envelope must be the received bytes and that of the body must be
``signed.body``, with no unknown fields anywhere. So the bytes CometBFT hashes (the transaction hash),
the bytes signed (the body inside the SignDoc) and the bytes executed are one-to-one: a relayer cannot
re-encode a transaction under a new hash (non-minimal varints, repeated or reordered fields, extra
fields) and have the copy execute.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shelfproof.ledger.core import bounds
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.v1 import transaction_pb2 as txpb

MAX_TX_BYTES = 64 * 1024


def tx_hash(raw: bytes) -> bytes:
    """CometBFT's transaction hash: SHA-256 of the bytes."""
    return hashlib.sha256(raw).digest()


def sign_doc_bytes(chain_id: str, signer: str, key_id: str, nonce: int, body: bytes) -> bytes:
    # All fields are scalars, so protobuf's encoding (fields in number order) is canonical.
    return txpb.SignDoc(
        chain_id=chain_id, signer=signer, key_id=key_id, nonce=nonce, body=body
    ).SerializeToString()


@dataclass(frozen=True)
class ParsedTx:
    raw: bytes
    hash: bytes
    signed: txpb.SignedTransaction
    body: txpb.TransactionBody
    action: str


def parse(raw: bytes) -> ParsedTx:
    """Decode and check a transaction from its bytes alone (no state): the same verdict on every node.

    Raises TxRejected: TX_TOO_LARGE, MALFORMED (undecodable, non-canonical, unknown fields, no action)
    or INVALID_ARGUMENT (a value outside ``bounds``)."""
    if len(raw) > MAX_TX_BYTES:
        raise TxRejected(ResultCode.TX_TOO_LARGE, f"transaction of {len(raw)} bytes exceeds {MAX_TX_BYTES}")
    signed, body = txpb.SignedTransaction(), txpb.TransactionBody()
    try:
        signed.ParseFromString(raw)
        body.ParseFromString(signed.body)
    except Exception:  # noqa: BLE001 - any decode failure is a malformed transaction
        raise TxRejected(ResultCode.MALFORMED, "not a SignedTransaction") from None
    # Without its unknown fields (dropped recursively), the deterministic re-encoding is the received
    # bytes only if there were none and the encoding was canonical.
    signed.DiscardUnknownFields()
    body.DiscardUnknownFields()
    if signed.SerializeToString(deterministic=True) != raw:
        raise TxRejected(ResultCode.MALFORMED, "the envelope is not canonically encoded or has unknown fields")
    if body.SerializeToString(deterministic=True) != signed.body:
        raise TxRejected(ResultCode.MALFORMED, "the body is not canonically encoded or has unknown fields")
    bounds.check_message(signed)
    bounds.check_message(body)
    action = body.WhichOneof("action")
    if action is None:
        raise TxRejected(ResultCode.MALFORMED, "transaction body carries no action")
    return ParsedTx(raw, tx_hash(raw), signed, body, action)


# Plan the bounds walk now: a schema it cannot walk fails at import, not inside a block.
bounds.check_message(txpb.SignedTransaction())
bounds.check_message(txpb.TransactionBody())


def key_id_for(public_key: bytes) -> str:
    """A short, stable key id: the first 8 bytes of SHA-256(public key), hex."""
    return hashlib.sha256(public_key).hexdigest()[:16]
