"""RFC 6962 Merkle trees and ``simple:v`` proofs exactly as CometBFT v0.38 computes and checks them.

CometBFT (crypto/merkle) hashes with SHA-256: leaf = SHA256(0x00 ‖ item), inner = SHA256(0x01 ‖ left ‖
right), empty tree = SHA256(""); a list of n > 1 items splits at the largest power of two below n. We
build bottom-up instead (pair neighbours, promote a lone last node one level): that gives the same tree
and keeps every level, so a proof is a walk up the levels.

The application's state commits to a three-level map: each key lives in one of ``BUCKETS`` buckets
of its store, chosen by SHA-256 of the key; a bucket's root is a tree over ``kv_leaf(key, value)`` of
its pairs sorted by key; a store's root is the perfect tree over its ``BUCKETS`` bucket leaves
``kv_leaf(b"", bucket root)`` in bucket order; the app hash is a tree over ``kv_leaf(store name, store
root)`` sorted by name. A query proof is three ``simple:v`` ops (key, bucket, store), which CometBFT's
light client checks with its default proof runtime and the keypath ``/<store>/<key>``: an op with an
empty key consumes no keypath part. Why buckets: a change rebuilds one small bucket and one path of
``BUCKET_BITS`` hashes instead of a tree over the whole store, and empty buckets all share one leaf,
so empty subtrees are constants and a store's tree is stored sparsely (see ``core.state``).

Absence ("not recalled", "key not revoked") is proven over the same sorted trees, by the missing key's
two neighbours: a ``shelfproof:absent`` op carries the greatest key below it and the least key above it
with their paths, and the paths must show the two leaves adjacent (the rightmost leaf of some node's
left subtree and the leftmost leaf of its right subtree), or the one neighbour the first or last leaf,
or the store empty. Why this and not a tree with non-membership proofs (a sparse Merkle tree, an IAVL or
JMT range proof): it keeps the app hash and every presence proof exactly as they are, so ``cometbft
light`` still verifies presence with no custom code and no state migrates; an absence proof costs two
paths, 2·log2(n) hashes. Adjacency is read from the paths' left/right turns, not from the indexes and
total the prover claims: with a false ``total`` a real leaf can be shown at another index (a tree of 3
proves its last leaf as index 1 of 2), and two leaves apart could then look adjacent.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from google.protobuf.message import DecodeError
from tendermint.crypto import proof_pb2

from shelfproof.ledger.v1.ledger_pb2 import AbsenceNeighbour, AbsenceProof, ProofOp

HASH_SIZE = 32
MAX_AUNTS = 100  # crypto/merkle/proof.go MaxAunts: the decoder refuses deeper proofs
PROOF_OP_VALUE = "simple:v"
PROOF_OP_ABSENT = "shelfproof:absent"

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_INNER = b"\x01"
_VALUE_HASH_LEN = b"\x20"  # uvarint(32), the length prefix of SHA256(value) in a kv leaf

EMPTY_ROOT = _sha256(b"").digest()

# Buckets per store: 2^18 bounds a store's tree at 2^19 nodes in memory, keeps buckets to ~20 keys at
# five million keys, and a bucket path (18 aunts) well under MAX_AUNTS.
BUCKET_BITS = 18
BUCKETS = 1 << BUCKET_BITS


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


def kv_leaf_hash_of_value_hash(key: bytes, value_hash: bytes) -> bytes:
    """The same leaf hash from SHA256(value): what an absence proof's neighbours carry."""
    return _sha256(_LEAF + uvarint(len(key)) + key + _VALUE_HASH_LEN + value_hash).digest()


def bucket_of(key: bytes) -> int:
    """The bucket a key lives in: the top ``BUCKET_BITS`` bits of SHA-256(key) (every node agrees)."""
    return int.from_bytes(_sha256(key).digest()[:4], "big") >> (32 - BUCKET_BITS)


EMPTY_BUCKET_LEAF = kv_leaf_hash(b"", EMPTY_ROOT)


def _empty_subtree_roots() -> tuple[bytes, ...]:
    """Root of an all-empty subtree of the bucket tree by its height above the bucket leaves."""
    roots = [EMPTY_BUCKET_LEAF]
    for _ in range(BUCKET_BITS):
        roots.append(inner_hash(roots[-1], roots[-1]))
    return tuple(roots)


EMPTY_SUBTREES = _empty_subtree_roots()
EMPTY_STORE_ROOT = EMPTY_SUBTREES[BUCKET_BITS]


def split_point(total: int) -> int:
    """Largest power of two strictly below ``total`` (total > 1): CometBFT's getSplitPoint."""
    return 1 << ((total - 1).bit_length() - 1)


def _leaf_sides(index: int, total: int) -> list[bool]:
    """The leaf's side at every split from the root down (True: it is in the left subtree)."""
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
    return leaf_is_left


def _root_from_aunts(index: int, total: int, leaf: bytes, aunts: Sequence[bytes]) -> bytes:
    """computeHashFromAunts without recursion: find the leaf's side at every split from the top,
    then hash upwards, the deepest split taking aunts[0]."""
    leaf_is_left = _leaf_sides(index, total)
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


def empty_node(node: int) -> bytes:
    """The hash of bucket-tree node ``node`` (heap numbering: root 1, children 2i and 2i + 1, bucket b's
    leaf BUCKETS + b) when every bucket under it is empty."""
    return EMPTY_SUBTREES[BUCKET_BITS + 1 - node.bit_length()]


def bucket_leaf(bucket_root: bytes) -> bytes:
    """A bucket's leaf in its store's tree: the kv leaf of (empty key, bucket root)."""
    return EMPTY_BUCKET_LEAF if bucket_root == EMPTY_ROOT else kv_leaf_hash(b"", bucket_root)


def bucket_tree_changes(leaves: Mapping[int, bytes], node_of: Callable[[int], bytes]) -> dict[int, bytes]:
    """Every bucket-tree node that changes when the buckets in ``leaves`` get these leaf hashes (the root
    included); ``node_of`` reads the others. One path of BUCKET_BITS hashes per bucket, shared near the top."""
    changed = {BUCKETS + bucket: leaf for bucket, leaf in leaves.items()}
    level = set(changed)
    while level and level != {1}:
        level = {node >> 1 for node in level}
        for node in level:
            left, right = 2 * node, 2 * node + 1
            changed[node] = _sha256(
                _INNER + (changed[left] if left in changed else node_of(left)) + (changed[right] if right in changed else node_of(right))
            ).digest()
    return changed


def bucket_path(bucket: int, node_of: Callable[[int], bytes]) -> Proof:
    """The inclusion proof of a bucket's leaf in its store's tree."""
    if not 0 <= bucket < BUCKETS:
        raise IndexError(f"bucket {bucket} outside 0..{BUCKETS - 1}")
    node = BUCKETS + bucket
    leaf = node_of(node)
    aunts = []
    while node > 1:
        aunts.append(node_of(node ^ 1))
        node >>= 1
    return Proof(BUCKETS, bucket, leaf, tuple(aunts))


def bucket_tree(items: Mapping[bytes, bytes]) -> tuple[dict[int, tuple[list[bytes], MerkleTree]], dict[int, bytes]]:
    """A store held as a plain mapping, laid out as the ledger commits it: (bucket -> (sorted keys, bucket
    tree)) for the non-empty buckets, and the store tree's non-empty nodes (the root is node 1)."""
    grouped: dict[int, list[bytes]] = {}
    for key in items:
        grouped.setdefault(bucket_of(key), []).append(key)
    buckets = {}
    for bucket, keys in grouped.items():
        keys.sort()
        buckets[bucket] = (keys, MerkleTree.from_leaf_hashes([kv_leaf_hash(k, items[k]) for k in keys]))
    nodes = bucket_tree_changes({b: bucket_leaf(tree.root) for b, (_, tree) in buckets.items()}, empty_node)
    return buckets, nodes


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
    _run_value_ops(ops, 0, root, list(keypath), value)


def _run_value_ops(ops: Sequence[ProofOpLike], start: int, root: bytes, keys: list[bytes], arg: bytes) -> None:
    """Run ``simple:v`` ops from ``ops[start]`` on with ``arg`` as the first input (see above)."""
    for i, op in enumerate(ops[start:], start):
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


# --- absence: the missing key's neighbours in the sorted tree ----------------------------------------

MAX_ABSENCE_PROOF_BYTES = 2 * (MAX_AUNTS * (HASH_SIZE + 2) + 4096) + 64


def absence_op(
    key: bytes, keys: Sequence[bytes], tree: MerkleTree, value_hash_of: Callable[[bytes], bytes]
) -> ProofOp:
    """The ``shelfproof:absent`` op for ``key``, missing from ``keys`` (sorted, the leaves of ``tree``)."""
    index = bisect.bisect_left(keys, key)
    if index < len(keys) and keys[index] == key:
        raise ValueError("the key is present; prove it with value_op")
    proof = AbsenceProof(total=len(keys))
    for field, position in (("left", index - 1), ("right", index)):
        if 0 <= position < len(keys):
            neighbour = keys[position]
            path = tree.proof(position)
            getattr(proof, field).CopyFrom(
                AbsenceNeighbour(key=neighbour, value_hash=value_hash_of(neighbour), index=position, aunts=path.aunts)
            )
    return ProofOp(type=PROOF_OP_ABSENT, key=key, data=proof.SerializeToString())


def _neighbour_root(side: str, n: AbsenceNeighbour, total: int) -> tuple[bytes, list[bool]]:
    if len(n.value_hash) != HASH_SIZE:
        raise ProofError(f"{side} neighbour: value hash is {len(n.value_hash)} bytes, expected {HASH_SIZE}")
    leaf = kv_leaf_hash_of_value_hash(n.key, n.value_hash)
    _check_shape(total, n.index, leaf, n.aunts)
    return _root_from_aunts(n.index, total, leaf, n.aunts), _leaf_sides(n.index, total)


def absent_store_root(key: bytes, data: bytes) -> bytes:
    """The store root under which ``data`` (an AbsenceProof) proves ``key`` absent, or ProofError.

    The neighbours must bracket the key (left < key < right, by bytes, the tree's order) and their
    paths must turn so that nothing can sit between them: below their last common node the left one
    goes left once and then only right, the right one right once and then only left. A lone left
    neighbour must be the last leaf (only right turns), a lone right one the first (only left turns),
    and no neighbour at all means the empty tree, whose root is SHA256("").
    """
    if not key:
        raise ProofError("absence proof for an empty key")
    if len(data) > MAX_ABSENCE_PROOF_BYTES:
        raise ProofError(f"absence proof of {len(data)} bytes is too large")
    try:
        proof = AbsenceProof.FromString(data)
    except DecodeError as err:
        raise ProofError(f"undecodable absence proof: {err}") from None
    has_left, has_right = proof.HasField("left"), proof.HasField("right")
    if not has_left and not has_right:
        if proof.total != 0:
            raise ProofError(f"absence proof without neighbours in a tree of {proof.total} leaves")
        return EMPTY_ROOT
    if proof.total <= 0:
        raise ProofError(f"absence proof with neighbours in a tree of {proof.total} leaves")
    roots: list[bytes] = []
    left_sides = right_sides = None
    if has_left:
        if not proof.left.key < key:
            raise ProofError("the left neighbour does not sort before the missing key")
        root, left_sides = _neighbour_root("left", proof.left, proof.total)
        roots.append(root)
    if has_right:
        if not key < proof.right.key:
            raise ProofError("the right neighbour does not sort after the missing key")
        root, right_sides = _neighbour_root("right", proof.right, proof.total)
        roots.append(root)
    if len(roots) == 2:
        if roots[0] != roots[1]:
            raise ProofError("the neighbours' paths lead to different roots")
        if proof.left.index + 1 != proof.right.index:
            raise ProofError(f"neighbours at leaves {proof.left.index} and {proof.right.index} are not adjacent")
        left_sides, right_sides = left_sides or [], right_sides or []
        split = 0
        while split < min(len(left_sides), len(right_sides)) and left_sides[split] == right_sides[split]:
            split += 1
        if (
            split >= len(left_sides)
            or split >= len(right_sides)
            or not left_sides[split]
            or right_sides[split]
            or any(left_sides[split + 1 :])
            or not all(right_sides[split + 1 :])
        ):
            raise ProofError("the neighbours' paths leave room for leaves between them")
    elif has_left:
        if any(left_sides or ()):
            raise ProofError("a lone left neighbour must be the last leaf")
    elif not all(right_sides or ()):
        raise ProofError("a lone right neighbour must be the first leaf")
    return roots[0]


def verify_absence_proof(ops: Sequence[ProofOpLike], root: bytes, keypath: Sequence[bytes]) -> None:
    """``keypath``'s last part is absent: a ``shelfproof:absent`` op for it gives its bucket's root, the
    bucket's ``simple:v`` op (at the key's bucket) its store's root, and the store's op proves that
    under ``root`` (consuming the rest of the path)."""
    if len(ops) != 3:
        raise ProofError("an absence proof is three ops: the absent op, the bucket op and the store op")
    op = ops[0]
    if op.type != PROOF_OP_ABSENT:
        raise ProofError(f"op #0: expected {PROOF_OP_ABSENT!r}, got {op.type!r}")
    keys = list(keypath)
    if not keys or keys[-1] != op.key:
        raise ProofError(f"op #0: key mismatch, expected {keys[-1] if keys else None!r}, got {op.key!r}")
    keys.pop()
    # The bucket op must place the proven bucket where the key lives: an empty-keyed op consumes no
    # keypath part, so without this a key could be "proven" absent from some other bucket (or, with
    # the bucket op left out, from the store tree's own leaves).
    bucket_op = ops[1]
    if bucket_op.type != PROOF_OP_VALUE or bucket_op.key:
        raise ProofError("op #1: expected the bucket's simple:v op with an empty key")
    try:
        bucket_proof = proof_pb2.ValueOp.FromString(bucket_op.data).proof
    except DecodeError as err:
        raise ProofError(f"op #1: undecodable ValueOp: {err}") from None
    if bucket_proof.total != BUCKETS or bucket_proof.index != bucket_of(op.key):
        raise ProofError(
            f"op #1: bucket {bucket_proof.index} of {bucket_proof.total}, the key lives in {bucket_of(op.key)} of {BUCKETS}"
        )
    _run_value_ops(ops, 1, root, keys, absent_store_root(op.key, op.data))


def verify_store_proof(ops: Sequence[ProofOpLike], root: bytes, keypath: Sequence[bytes], value: bytes | None) -> None:
    """``value`` (or, for None, the key's absence) under ``root``."""
    if value is None:
        verify_absence_proof(ops, root, keypath)
    else:
        verify_value_proof(ops, root, keypath, value)


# --- the store layout, for callers that hold plain mappings (tests, tools) -------------------------


def store_root_and_proofs(
    stores: Mapping[str, Mapping[bytes, bytes]], store: str, key: bytes
) -> tuple[bytes, list[ProofOp]]:
    """App hash of ``stores`` and the three ops proving ``stores[store][key]`` (or its absence) under it."""
    if store not in stores:
        raise KeyError(store)
    names = sorted(stores, key=str.encode)
    roots = {}
    key_ops: list[ProofOp] = []
    for name in names:
        items = stores[name]
        buckets, nodes = bucket_tree(items)
        roots[name] = nodes.get(1, EMPTY_STORE_ROOT)
        if name == store:
            bucket = bucket_of(key)
            keys, tree = buckets.get(bucket, ([], MerkleTree.from_leaf_hashes([])))
            key_op = (
                value_op(key, tree.proof(keys.index(key)))
                if key in items
                else absence_op(key, keys, tree, lambda k: _sha256(items[k]).digest())
            )
            key_ops = [key_op, value_op(b"", bucket_path(bucket, lambda n: nodes.get(n) or empty_node(n)))]
    root_tree = MerkleTree.from_leaf_hashes([kv_leaf_hash(n.encode(), roots[n]) for n in names])
    return root_tree.root, [*key_ops, value_op(store.encode(), root_tree.proof(names.index(store)))]
