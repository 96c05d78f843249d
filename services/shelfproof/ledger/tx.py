"""Signing and reading ledger transactions (clients and the state machine share this)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from nacl.signing import SigningKey

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


def key_id_for(public_key: bytes) -> str:
    """A short, stable key id: the first 8 bytes of SHA-256(public key), hex."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass
class AccountSigner:
    """An agent's signing key and its next nonce: signs transaction bodies for one chain."""

    chain_id: str
    agent_id: str
    signing_key: SigningKey
    key_id: str = ""
    next_nonce: int = 1
    _public_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._public_key = bytes(self.signing_key.verify_key)
        if not self.key_id:
            self.key_id = key_id_for(self._public_key)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @classmethod
    def generate(cls, chain_id: str, agent_id: str) -> "AccountSigner":
        return cls(chain_id, agent_id, SigningKey.generate())

    def sign(self, body: txpb.TransactionBody, *, nonce: int | None = None) -> bytes:
        """Serialized SignedTransaction; takes the next nonce unless one is given."""
        if not body.created_unix_ms:
            body.created_unix_ms = int(time.time() * 1000)
        if nonce is None:
            nonce, self.next_nonce = self.next_nonce, self.next_nonce + 1
        body_bytes = body.SerializeToString(deterministic=True)
        signature = self.signing_key.sign(
            sign_doc_bytes(self.chain_id, self.agent_id, self.key_id, nonce, body_bytes)
        ).signature
        return txpb.SignedTransaction(
            body=body_bytes, signer=self.agent_id, key_id=self.key_id, nonce=nonce, signature=signature
        ).SerializeToString()
