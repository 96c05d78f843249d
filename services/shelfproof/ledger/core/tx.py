"""Reading and checking ledger transactions: their hash, the bytes a signature covers, the one parser.

``parse`` is the one reader of a transaction's bytes. It accepts only the canonical encoding: the
deterministic re-encoding of the envelope must be the received bytes and that of the body must be
``signed.body``, with no unknown fields anywhere. So the bytes CometBFT hashes (the transaction hash),
the bytes signed (the body inside the SignDoc) and the bytes executed are one-to-one: a relayer cannot
re-encode a transaction under a new hash (non-minimal varints, repeated or reordered fields, extra
fields) and have the copy execute.

A CometBFT transaction is either one SignedTransaction or a ``TransactionBatch`` of them (told apart
by the first byte, ``BATCH_TAG``). ``parse_batch`` checks only the batch's own envelope; its inner
transactions go through ``parse`` one by one, so a bad one is answered on its own (batches do not
nest: a batch is never a valid inner transaction).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shelfproof.ledger.core import bounds
from shelfproof.ledger.core.codes import ResultCode, TxRejected
from shelfproof.ledger.v1 import transaction_pb2 as txpb

MAX_TX_BYTES = 64 * 1024
# A batch stays well under CometBFT's limits: mempool max_tx_bytes 1 MiB, and RPC max_body_bytes
# (1,000,000 by default) after base64 (+1/3) and the JSON-RPC envelope.
MAX_BATCH_TXS = 512
MAX_BATCH_BYTES = 512 * 1024
# The first byte of an encoded TransactionBatch (field 15, length-delimited); a canonical
# SignedTransaction starts with 0x0a (field 1, its body).
BATCH_TAG = b"\x7a"


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
    if is_batch(raw):
        raise TxRejected(ResultCode.MALFORMED, "a batch where a signed transaction is expected (batches do not nest)")
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


def is_batch(raw: bytes) -> bool:
    return raw[:1] == BATCH_TAG


@dataclass(frozen=True)
class ParsedBatch:
    raw: bytes
    hash: bytes
    transactions: tuple[bytes, ...]


def parse_batch(raw: bytes) -> ParsedBatch:
    """Decode and check a batch's envelope from its bytes alone (its inner transactions are not
    parsed here). Raises TxRejected: TX_TOO_LARGE (over MAX_BATCH_BYTES), MALFORMED (undecodable,
    non-canonical, unknown fields, empty, more than MAX_BATCH_TXS)."""
    if len(raw) > MAX_BATCH_BYTES:
        raise TxRejected(ResultCode.TX_TOO_LARGE, f"batch of {len(raw)} bytes exceeds {MAX_BATCH_BYTES}")
    batch = txpb.TransactionBatch()
    try:
        batch.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - any decode failure is a malformed batch
        raise TxRejected(ResultCode.MALFORMED, "not a TransactionBatch") from None
    batch.DiscardUnknownFields()
    if not is_batch(raw) or batch.SerializeToString(deterministic=True) != raw:
        raise TxRejected(ResultCode.MALFORMED, "the batch is not canonically encoded or has unknown fields")
    if not 1 <= len(batch.transactions) <= MAX_BATCH_TXS:
        raise TxRejected(ResultCode.MALFORMED, f"a batch holds 1 to {MAX_BATCH_TXS} transactions, not {len(batch.transactions)}")
    return ParsedBatch(raw, tx_hash(raw), tuple(batch.transactions))


def encode_batch(transactions: list[bytes]) -> bytes:
    return txpb.TransactionBatch(transactions=transactions).SerializeToString(deterministic=True)


def batch_size(transactions_bytes: int, count: int) -> int:
    """Upper bound of the encoded size of a batch of ``count`` transactions totalling
    ``transactions_bytes`` (1 tag byte and at most 3 length bytes each, for inner ≤ MAX_TX_BYTES)."""
    return transactions_bytes + 4 * count


def application_transactions(raw: bytes) -> tuple[bytes, ...]:
    """The signed application transactions a CometBFT transaction carries: a batch's inner ones,
    or the transaction itself. A batch that fails its envelope check carries none."""
    if not is_batch(raw):
        return (raw,)
    try:
        return parse_batch(raw).transactions
    except TxRejected:
        return ()


# Plan the bounds walk now: a schema it cannot walk fails at import, not inside a block.
bounds.check_message(txpb.SignedTransaction())
bounds.check_message(txpb.TransactionBody())


def key_id_for(public_key: bytes) -> str:
    """A short, stable key id: the first 8 bytes of SHA-256(public key), hex."""
    return hashlib.sha256(public_key).hexdigest()[:16]
