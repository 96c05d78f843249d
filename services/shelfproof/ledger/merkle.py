"""RFC 6962 Merkle trees and ``simple:v`` proofs exactly as CometBFT v0.38 computes and checks them.

CometBFT (crypto/merkle) hashes with SHA-256: leaf = SHA256(0x00 ‖ item), inner = SHA256(0x01 ‖ left ‖
right), empty tree = SHA256(""); a list of n > 1 items splits at the largest power of two below n. We
build bottom-up instead (pair neighbours, promote a lone last node one level): that gives the same tree
and keeps every level, so a proof is a walk up the levels.

The application's state commits to a two-level map (see notes/cometbft.md §6): each store's root is a
tree over ``kv_leaf(key, value)`` sorted by key, and the app hash is a tree over
``kv_leaf(store name, store root)`` sorted by name. A query proof is two ``simple:v`` ops, which
CometBFT's light client checks with its default proof runtime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol, Sequence

from google.protobuf.message import DecodeError
from tendermint.crypto import proof_pb2

from shelfproof.ledger.v1.ledger_pb2 import ProofOp

HASH_SIZE = 32
MAX_AUNTS = 100  # crypto/merkle/proof.go MaxAunts: the decoder refuses deeper proofs
PROOF_OP_VALUE = "simple:v"

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_INNER = b"\x01"
_VALUE_HASH_LEN = b"\x20"  # uvarint(32), the length prefix of SHA256(value) in a kv leaf

EMPTY_ROOT = _sha256(b"").digest()


class ProofError(ValueError):
    """A proof is malformed or does not prove the claimed value under the claimed root."""


class ProofOpLike(Protocol):
    """Our ledger ProofOp and CometBFT's tendermint.crypto.ProofOp both fit."""

    type: str
    key: bytes
    data: bytes


def leaf_hash(data: bytes) -> bytes:
    return _sha256(_LEAF + data).digest()


def inner_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_INNER + left + right).digest()


def uvarint(n: int) -> bytes:
    """Unsigned LEB128, as protobuf and CometBFT's length prefixes write it."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def kv_leaf(key: bytes, value: bytes) -> bytes:
    """The leaf bytes a ``simple:v`` op hashes: uvarint(len key) ‖ key ‖ uvarint(32) ‖ SHA256(value)."""
    n = len(key)
    prefix = uvarint(n)
    return prefix + key + _VALUE_HASH_LEN + _sha256(value).digest()


def kv_leaf_hash(key: bytes, value: bytes) -> bytes:
    return _sha256(_LEAF + kv_leaf(key, value)).digest()


def split_point(total: int) -> int:
    """Largest power of two strictly below ``total`` (total > 1): CometBFT's getSplitPoint."""
    return 1 << ((total - 1).bit_length() - 1)


def _root_from_aunts(index: int, total: int, leaf: bytes, aunts: Sequence[bytes]) -> bytes:
    """computeHashFromAunts without recursion: find the leaf's side at every split from the top,
    then hash upwards, the deepest split taking aunts[0]."""
    if total <= 0 or index < 0 or index >= total:
        raise ProofError(f"invalid index {index} and/or total {total}")
    leaf_is_left: list[bool] = []
    while total > 1:
        k = split_point(total)
        if index < k:
            leaf_is_left.append(True)
            total = k
        else:
            leaf_is_left.append(False)
            index -= k
            total -= k
    if len(leaf_is_left) != len(aunts):
        raise ProofError(f"proof has {len(aunts)} aunts, the tree position needs {len(leaf_is_left)}")
    h = leaf
    depth = len(aunts)
    for i in range(depth):
        aunt = aunts[i]
        if leaf_is_left[depth - 1 - i]:
            h = _sha256(_INNER + h + aunt).digest()
        else:
            h = _sha256(_INNER + aunt + h).digest()
    return h


def _check_shape(total: int, index: int, leaf: bytes, aunts: Sequence[bytes]) -> None:
    """Proof.ValidateBasic plus the index bound that computeHashFromAunts enforces."""
    if total <= 0 or index < 0 or index >= total:
        raise ProofError(f"invalid index {index} and/or total {total}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}")
    if len(aunts) > MAX_AUNTS:
        raise ProofError(f"proof has {len(aunts)} aunts, at most {MAX_AUNTS} allowed")
    for i, aunt in enumerate(aunts):
        if len(aunt) != HASH_SIZE:
            raise ProofError(f"aunt #{i} is {len(aunt)} bytes, expected {HASH_SIZE}")


@dataclass(frozen=True, slots=True)
class Proof:
    """Inclusion proof of one leaf; aunts run from the leaf's sibling up to a child of the root."""

    total: int
    index: int
    leaf_hash: bytes
    aunts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.aunts) is not tuple:
            object.__setattr__(self, "aunts", tuple(self.aunts))
        _check_shape(self.total, self.index, self.leaf_hash, self.aunts)

    def compute_root(self) -> bytes:
        return _root_from_aunts(self.index, self.total, self.leaf_hash, self.aunts)

    def verify(self, root: bytes, leaf: bytes) -> None:
        """CometBFT's Proof.Verify: ``leaf`` is the item's bytes (hashed here), not its hash."""
        if leaf_hash(leaf) != self.leaf_hash:
            raise ProofError("leaf hash mismatch")
        if self.compute_root() != root:
            raise ProofError("computed root differs from the expected root")

    def to_proto(self) -> proof_pb2.Proof:
        return proof_pb2.Proof(total=self.total, index=self.index, leaf_hash=self.leaf_hash, aunts=self.aunts)

    @classmethod
    def from_proto(cls, pb: proof_pb2.Proof) -> "Proof":
        return cls(pb.total, pb.index, bytes(pb.leaf_hash), tuple(pb.aunts))


class MerkleTree:
    """All levels of a tree, bottom (leaf hashes) first: O(n) to build, O(log n) per proof."""

    __slots__ = ("levels",)

    def __init__(self, levels: list[list[bytes]]) -> None:
        self.levels = levels

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes]) -> "MerkleTree":
        level = list(hashes)
        levels = [level]
        while len(level) > 1:
            # Pair neighbours; a lone last node moves up unchanged (it is a right subtree whose
            # sibling appears higher up, which is where CometBFT's power-of-two split puts it).
            nxt = [_sha256(_INNER + l + r).digest() for l, r in zip(level[0::2], level[1::2])]
            if len(level) & 1:
                nxt.append(level[-1])
            levels.append(nxt)
            level = nxt
        return cls(levels)

    @classmethod
    def from_items(cls, items: Iterable[bytes]) -> "MerkleTree":
        return cls.from_leaf_hashes([_sha256(_LEAF + item).digest() for item in items])

    def __len__(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        top = self.levels[-1]
        return top[0] if top else EMPTY_ROOT

    def proof(self, index: int) -> Proof:
        total = len(self.levels[0])
        if not 0 <= index < total:
            raise IndexError(f"leaf {index} outside a tree of {total}")
        aunts = []
        i = index
        for level in self.levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                aunts.append(level[sibling])
            i >>= 1
        return Proof(total, index, self.levels[0][index], tuple(aunts))


def value_op(key: bytes, proof: Proof) -> ProofOp:
    """A ``simple:v`` op: CometBFT reads the key from ProofOp.key, the proof from the ValueOp."""
    data = proof_pb2.ValueOp(key=key, proof=proof.to_proto()).SerializeToString()
    return ProofOp(type=PROOF_OP_VALUE, key=key, data=data)


def keypath_for(store: str, key: bytes) -> list[bytes]:
    """Key path ``/<store>/<key>`` as parts; the verifier consumes them from the end."""
    return [store.encode(), key]


def verify_value_proof(ops: Sequence[ProofOpLike], root: bytes, keypath: Sequence[bytes], value: bytes) -> None:
    """CometBFT's ProofOperators.Verify with the default runtime (``simple:v`` only).

    Each op with a key must match the last unused keypath part, which it consumes; each op's output
    (its tree root) is the next op's input; the last output must be ``root`` with every part used.
    """
    if not ops:
        raise ProofError("no proof operations")
    keys = list(keypath)
    arg = value
    for i, op in enumerate(ops):
        if op.type != PROOF_OP_VALUE:
            raise ProofError(f"op #{i}: unsupported proof type {op.type!r}")
        try:
            vop = proof_pb2.ValueOp.FromString(op.data)
        except DecodeError as err:
            raise ProofError(f"op #{i}: undecodable ValueOp: {err}") from None
        if not vop.HasField("proof"):
            raise ProofError(f"op #{i}: ValueOp without a proof")
        p = vop.proof
        aunts = p.aunts
        _check_shape(p.total, p.index, p.leaf_hash, aunts)
        key = op.key
        if key:
            if not keys:
                raise ProofError(f"op #{i}: key path has no part left for key {key!r}")
            if keys[-1] != key:
                raise ProofError(f"op #{i}: key mismatch, expected {keys[-1]!r}, got {key!r}")
            keys.pop()
        if kv_leaf_hash(key, arg) != p.leaf_hash:
            raise ProofError(f"op #{i}: leaf hash mismatch for key {key!r}")
        arg = _root_from_aunts(p.index, p.total, p.leaf_hash, aunts)
    if arg != root:
        raise ProofError(f"calculated root {arg.hex().upper()} differs from {root.hex().upper()}")
    if keys:
        raise ProofError("key path not consumed")


# --- the two-level store layout, for callers that hold plain mappings (tests, tools) ---------------


def store_tree(items: Mapping[bytes, bytes]) -> tuple[list[bytes], MerkleTree]:
    """(keys sorted by bytes, tree over their kv leaves)."""
    keys = sorted(items)
    return keys, MerkleTree.from_leaf_hashes([kv_leaf_hash(k, items[k]) for k in keys])


def store_root_and_proofs(
    stores: Mapping[str, Mapping[bytes, bytes]], store: str, key: bytes
) -> tuple[bytes, list[ProofOp]]:
    """App hash of ``stores`` and the two ops proving ``stores[store][key]`` under it."""
    names = sorted(stores, key=str.encode)
    roots = {}
    key_proof = None
    for name in names:
        keys, tree = store_tree(stores[name])
        roots[name] = tree.root
        if name == store:
            key_proof = tree.proof(keys.index(key))
    if key_proof is None:
        raise KeyError(store)
    root_tree = MerkleTree.from_leaf_hashes([kv_leaf_hash(n.encode(), roots[n]) for n in names])
    ops = [value_op(key, key_proof), value_op(store.encode(), root_tree.proof(names.index(store)))]
    return root_tree.root, ops
