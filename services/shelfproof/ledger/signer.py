"""Signing ledger transactions as an agent (clients: services, people's consoles, tests). Outside the
deterministic core, which only verifies: signing reads the wall clock for ``created_unix_ms``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from shelfproof.ledger.core.tx import key_id_for, sign_doc_bytes
from shelfproof.ledger.v1 import transaction_pb2 as txpb


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
        """Serialized SignedTransaction, canonically encoded (what ``parse`` accepts); takes the next
        nonce unless one is given."""
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
        ).SerializeToString(deterministic=True)
