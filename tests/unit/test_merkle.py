"""RFC 6962 trees and simple:v proofs against CometBFT's vectors and a plain recursive model of its code."""

from __future__ import annotations

import hashlib
import os

import pytest
from tendermint.crypto import proof_pb2

from shelfproof.ledger.proofs.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    Proof,
    ProofError,
    inner_hash,
    keypath_for,
    kv_leaf,
    kv_leaf_hash,
    leaf_hash,
    store_root_and_proofs,
    value_op,
    verify_value_proof,
)
from shelfproof.ledger.v1.ledger_pb2 import ProofOp


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- a direct transcription of crypto/merkle/tree.go and proof.go, recursion and all -----------------


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def recursive_root(items: list[bytes]) -> bytes:
    if not items:
        return sha(b"")
    if len(items) == 1:
        return sha(b"\x00" + items[0])
    k = split(len(items))
    return sha(b"\x01" + recursive_root(items[:k]) + recursive_root(items[k:]))


def recursive_aunts(items: list[bytes], index: int) -> list[bytes]:
    """trailsFromByteSlices + FlattenAunts: the leaf's sibling first, the root's child last."""
    if len(items) == 1:
        return []
    k = split(len(items))
    if index < k:
        return recursive_aunts(items[:k], index) + [recursive_root(items[k:])]
    return recursive_aunts(items[k:], index - k) + [recursive_root(items[:k])]


def items_of(n: int) -> list[bytes]:
    return [f"item-{i}".encode() for i in range(n)]


# --- vectors --------------------------------------------------------------------------------------------


def test_rfc6962_vectors() -> None:
    # crypto/merkle/rfc6962_test.go TestRFC6962Hasher
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleTree.from_items([]).root == EMPTY_ROOT
    assert MerkleTree.from_items([b""]).root.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert inner_hash(b"N123", b"N456").hex() == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"


@pytest.mark.parametrize(
    ("items", "expected"),
    [  # crypto/merkle/tree_test.go TestHashFromByteSlices
        ([bytes([1, 2, 3])], "054edec1d0211f624fed0cbca9d4f9400b0e491c43742af2c5b0abebf0c990d8"),
        ([bytes([1, 2, 3]), bytes([4, 5, 6])], "82e6cfce00453804379b53962939eaa7906b39904be0813fcadd31b100773c4b"),
        (
            [bytes([1, 2]), bytes([3, 4]), bytes([5, 6]), bytes([7, 8]), bytes([9, 10])],
            "f326493eceab4f2d9ffbc78c59432a0a005d6ea98392045c74df5d14a113be18",
        ),
    ],
)
def test_hash_from_byte_slices_vectors(items: list[bytes], expected: str) -> None:
    assert MerkleTree.from_items(items).root.hex() == expected


def test_bottom_up_equals_power_of_two_split() -> None:
    for n in range(0, 71):
        items = items_of(n)
        assert MerkleTree.from_items(items).root == recursive_root(items), n


def test_bottom_up_equals_recursive_for_a_larger_random_tree() -> None:
    items = [os.urandom(8) for _ in range(1000)]
    assert MerkleTree.from_items(items).root == recursive_root(items)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 70])
def test_every_proof_matches_cometbft_and_verifies(n: int) -> None:
    items = items_of(n)
    tree = MerkleTree.from_items(items)
    for i, item in enumerate(items):
        proof = tree.proof(i)
        assert list(proof.aunts) == recursive_aunts(items, i)
        assert proof.leaf_hash == leaf_hash(item)
        assert proof.compute_root() == tree.root
        proof.verify(tree.root, item)
        assert Proof.from_proto(proof.to_proto()) == proof


def test_tampered_proofs_fail() -> None:
    items = items_of(13)
    tree = MerkleTree.from_items(items)
    proof = tree.proof(6)
    with pytest.raises(ProofError):
        proof.verify(tree.root, b"item-7")  # another value
    bad_aunt = bytes([proof.aunts[1][0] ^ 1]) + proof.aunts[1][1:]
    tampered = Proof(proof.total, proof.index, proof.leaf_hash, (proof.aunts[0], bad_aunt, *proof.aunts[2:]))
    assert tampered.compute_root() != tree.root
    moved = Proof(proof.total, 7, proof.leaf_hash, proof.aunts)
    assert moved.compute_root() != tree.root
    with pytest.raises(ProofError):
        moved.verify(tree.root, b"item-6")


def test_malformed_proofs_are_rejected() -> None:
    h = leaf_hash(b"x")
    with pytest.raises(ProofError):
        Proof(2, 0, h[:31], (h,))
    with pytest.raises(ProofError):
        Proof(2, 0, h, (h + b"\x00",))
    with pytest.raises(ProofError):
        Proof(2, 2, h, (h,))  # index >= total
    with pytest.raises(ProofError):
        Proof(0, 0, h, ())
    with pytest.raises(ProofError):
        Proof(-1, 0, h, ())
    with pytest.raises(ProofError):
        Proof(1 << 60, 0, h, (h,) * 101)
    with pytest.raises(ProofError):
        Proof(4, 1, h, (h,)).compute_root()  # needs two aunts
    with pytest.raises(ProofError):
        Proof(1, 0, h, (h,)).compute_root()  # a single leaf has none
    with pytest.raises(ProofError):
        Proof.from_proto(proof_pb2.Proof(total=3, index=0, leaf_hash=b"short", aunts=[h, h]))


def test_kv_leaf_encoding() -> None:
    value_hash = sha(b"v")
    assert kv_leaf(b"k", b"v") == b"\x01k\x20" + value_hash
    long_key = b"k" * 300  # uvarint(300) = AC 02
    assert kv_leaf(long_key, b"v") == b"\xac\x02" + long_key + b"\x20" + value_hash
    assert kv_leaf_hash(b"k", b"v") == sha(b"\x00\x01k\x20" + value_hash)


def test_value_op_wire_format() -> None:
    tree = MerkleTree.from_leaf_hashes([kv_leaf_hash(b"a", b"1"), kv_leaf_hash(b"b", b"2")])
    op = value_op(b"b", tree.proof(1))
    assert isinstance(op, ProofOp) and op.type == "simple:v" and op.key == b"b"
    decoded = proof_pb2.ValueOp.FromString(op.data)
    assert decoded.key == b"b"
    assert (decoded.proof.total, decoded.proof.index) == (2, 1)
    assert list(decoded.proof.aunts) == [kv_leaf_hash(b"a", b"1")]


# --- the two-level store layout -------------------------------------------------------------------------

STORES = {
    "products": {b"gtin/0001": b"widget", b"gtin/0002": b"gadget", b"gtin/0003": b"gizmo"},
    "serials": {f"s/{i:05d}".encode(): f"unit {i}".encode() for i in range(37)},
    "accounts": {b"acme": b"key-a"},
}


def test_two_level_proof_verifies_against_an_independent_app_hash() -> None:
    app_hash, ops = store_root_and_proofs(STORES, "serials", b"s/00017")
    # Rebuild the app hash from the notes' recipe with the recursive model only.
    roots = {
        name: recursive_root([kv_leaf(k, v) for k, v in sorted(items.items())]) for name, items in STORES.items()
    }
    expected = recursive_root([kv_leaf(name.encode(), roots[name]) for name in sorted(STORES)])
    assert app_hash == expected
    verify_value_proof(ops, app_hash, keypath_for("serials", b"s/00017"), b"unit 17")
    assert keypath_for("serials", b"s/00017") == [b"serials", b"s/00017"]


def test_single_store_app_hash_formula() -> None:
    app_hash, ops = store_root_and_proofs({"only": {b"k": b"v"}}, "only", b"k")
    store_root = sha(b"\x00" + kv_leaf(b"k", b"v"))
    assert app_hash == sha(b"\x00" + b"\x04only\x20" + sha(store_root))
    verify_value_proof(ops, app_hash, [b"only", b"k"], b"v")


def _flip(data: bytes, at: int = -1) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def test_two_level_tampering_fails() -> None:
    app_hash, ops = store_root_and_proofs(STORES, "products", b"gtin/0002")
    path = keypath_for("products", b"gtin/0002")
    cases = {
        "value": (ops, app_hash, path, b"gadgeT"),
        "root": (ops, _flip(app_hash), path, b"gadget"),
        "key in path": (ops, app_hash, [b"products", b"gtin/0003"], b"gadget"),
        "store in path": (ops, app_hash, [b"serials", b"gtin/0002"], b"gadget"),
        "reversed path": (ops, app_hash, list(reversed(path)), b"gadget"),
        "extra path part": (ops, app_hash, [b"x", *path], b"gadget"),
        "first op only": (ops[:1], app_hash, path, b"gadget"),
        "ops swapped": (ops[::-1], app_hash, path, b"gadget"),
        "no ops": ([], app_hash, path, b"gadget"),
    }
    for name, args in cases.items():
        with pytest.raises(ProofError):
            verify_value_proof(*args)
            pytest.fail(name)

    # Op-level tampering: the op key, an aunt, the index, the type, garbage data.
    inner = proof_pb2.ValueOp.FromString(ops[0].data)
    bad_aunt = proof_pb2.ValueOp()
    bad_aunt.CopyFrom(inner)
    bad_aunt.proof.aunts[0] = _flip(bad_aunt.proof.aunts[0])
    bad_index = proof_pb2.ValueOp()
    bad_index.CopyFrom(inner)
    bad_index.proof.index = (inner.proof.index + 1) % inner.proof.total
    variants = [
        ProofOp(type="simple:v", key=b"gtin/0003", data=ops[0].data),
        ProofOp(type="simple:v", key=ops[0].key, data=bad_aunt.SerializeToString()),
        ProofOp(type="simple:v", key=ops[0].key, data=bad_index.SerializeToString()),
        ProofOp(type="iavl:v", key=ops[0].key, data=ops[0].data),
        ProofOp(type="simple:v", key=ops[0].key, data=b"\xff\xff\xff"),
    ]
    for variant in variants:
        with pytest.raises(ProofError):
            verify_value_proof([variant, ops[1]], app_hash, path, b"gadget")


def test_forged_membership_with_total_zero_fails() -> None:
    # crypto/merkle/proof_test.go TestVsa2022_100: a proof with no total and no aunts.
    key, value = b"\x13", b"\x37"
    data = proof_pb2.ValueOp(key=key, proof=proof_pb2.Proof(leaf_hash=kv_leaf_hash(key, value))).SerializeToString()
    op = ProofOp(type="simple:v", key=key, data=data)
    with pytest.raises(ProofError):
        verify_value_proof([op], b"", [key], value)


def test_large_tree_proofs_spot_check() -> None:
    leaves = [sha(i.to_bytes(4, "big")) for i in range(100_000)]
    tree = MerkleTree.from_leaf_hashes(leaves)
    assert len(tree) == 100_000
    for i in (0, 1, 65_535, 65_536, 99_998, 99_999):
        proof = tree.proof(i)
        assert proof.leaf_hash == leaves[i]
        assert proof.compute_root() == tree.root
    with pytest.raises(IndexError):
        tree.proof(100_000)



# --- absence: adjacent neighbours in the sorted tree ---------------------------------------------------

from shelfproof.ledger.proofs.merkle import (  # noqa: E402 - grouped with the tests that use them
    PROOF_OP_ABSENT,
    absence_op,
    absent_store_root,
    store_tree,
    verify_absence_proof,
    verify_store_proof,
)
from shelfproof.ledger.core.state import StoreVersion  # noqa: E402
from shelfproof.ledger.v1.ledger_pb2 import AbsenceNeighbour, AbsenceProof  # noqa: E402


def _stores(n: int) -> dict[str, dict[bytes, bytes]]:
    """A store of n keys k00, k02, k04, ... (gaps for absent keys) beside another store."""
    return {"recalls": {f"k{2 * i:02d}".encode(): f"v{i}".encode() for i in range(n)}, "items": {b"x": b"1"}}


def _absent_ops(stores, key: bytes) -> tuple[bytes, list[ProofOp]]:
    return store_root_and_proofs(stores, "recalls", key)


def _with_proof(ops: list[ProofOp], proof: AbsenceProof) -> list[ProofOp]:
    return [ProofOp(type=ops[0].type, key=ops[0].key, data=proof.SerializeToString()), ops[1]]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_absence_is_provable_at_every_position(n: int) -> None:
    stores = _stores(n)
    # Empty store / before the first / between every pair / after the last.
    missing = [b"a", *[f"k{2 * i + 1:02d}".encode() for i in range(n)], b"z"] if n else [b"a", b"k01", b"z"]
    for key in missing:
        app_hash, ops = _absent_ops(stores, key)
        assert [op.type for op in ops] == [PROOF_OP_ABSENT, "simple:v"]
        verify_absence_proof(ops, app_hash, keypath_for("recalls", key))
        verify_store_proof(ops, app_hash, keypath_for("recalls", key), None)
        proof = AbsenceProof.FromString(ops[0].data)
        assert proof.total == n and proof.HasField("left") == (n > 0 and key != b"a")
        # The same proof says nothing about another key, present or absent, nor under another root.
        for other in (b"k00", b"k02", b"0", b"zz"):
            if other in stores["recalls"] or not (proof.left.key < other < (proof.right.key or b"\xff")):
                with pytest.raises(ProofError):
                    verify_absence_proof([ProofOp(type=ops[0].type, key=other, data=ops[0].data), ops[1]], app_hash, keypath_for("recalls", other))
        with pytest.raises(ProofError):
            verify_absence_proof(ops, sha(app_hash), keypath_for("recalls", key))
        with pytest.raises(ProofError):
            verify_absence_proof(ops, app_hash, keypath_for("items", key))


def test_store_version_absence_matches_the_mapping_model() -> None:
    items = _stores(9)["recalls"]
    version = StoreVersion.from_items(items)
    keys, tree = store_tree(items)
    for key in (b"a", b"k05", b"z"):
        assert version.absence_op(key) == absence_op(key, keys, tree, lambda k: sha(items[k]))
    with pytest.raises(ValueError):
        version.absence_op(b"k04")


def _between(n: int = 9, key: bytes = b"k05") -> tuple[bytes, list[ProofOp], AbsenceProof, list[bytes], MerkleTree]:
    stores = _stores(n)
    app_hash, ops = _absent_ops(stores, key)
    keys, tree = store_tree(stores["recalls"])
    return app_hash, ops, AbsenceProof.FromString(ops[0].data), keys, tree


def _neighbour(keys: list[bytes], tree: MerkleTree, i: int, values: dict[bytes, bytes] | None = None) -> AbsenceNeighbour:
    values = values or _stores(len(keys))["recalls"]
    return AbsenceNeighbour(key=keys[i], value_hash=sha(values[keys[i]]), index=i, aunts=tree.proof(i).aunts)


def test_forged_absence_proofs_are_rejected() -> None:
    app_hash, ops, proof, keys, tree = _between()
    path = keypath_for("recalls", b"k05")
    verify_absence_proof(ops, app_hash, path)
    assert (proof.left.key, proof.right.key, proof.left.index, proof.right.index) == (b"k04", b"k06", 2, 3)
    forgeries = {
        # Neighbours that are real leaves but not adjacent: k04 and k08 hide k06 (a present key).
        "not adjacent": AbsenceProof(total=9, left=_neighbour(keys, tree, 2), right=_neighbour(keys, tree, 4)),
        # The same two leaves with the right one's index moved to look adjacent: its path no longer leads to the root.
        "index lies": AbsenceProof(
            total=9, left=_neighbour(keys, tree, 2),
            right=AbsenceNeighbour(key=keys[4], value_hash=sha(b"v4"), index=3, aunts=tree.proof(4).aunts),
        ),
        "wrong order": AbsenceProof(total=9, left=proof.right, right=proof.left),
        "left only, not the last leaf": AbsenceProof(total=9, left=proof.left),
        "right only, not the first leaf": AbsenceProof(total=9, right=proof.right),
        "claimed empty": AbsenceProof(total=0),
        "empty with a total": AbsenceProof(total=9),
        "tampered value hash": AbsenceProof(
            total=9, left=AbsenceNeighbour(key=b"k04", value_hash=sha(b"other"), index=2, aunts=proof.left.aunts), right=proof.right
        ),
        "tampered aunt": AbsenceProof(
            total=9, left=proof.left,
            right=AbsenceNeighbour(key=b"k06", value_hash=proof.right.value_hash, index=3, aunts=[sha(b"x"), *proof.right.aunts[1:]]),
        ),
        "short value hash": AbsenceProof(
            total=9, left=AbsenceNeighbour(key=b"k04", value_hash=b"\x01", index=2, aunts=proof.left.aunts), right=proof.right
        ),
        "another total": AbsenceProof(total=8, left=proof.left, right=proof.right),
    }
    for name, forged in forgeries.items():
        with pytest.raises(ProofError):
            verify_absence_proof(_with_proof(ops, forged), app_hash, path)
            pytest.fail(f"accepted: {name}")
    # The key is not between its claimed neighbours: the honest proof of k05 offered for k07, k03, k04.
    for other in (b"k07", b"k03", b"k04", b"k06"):
        with pytest.raises(ProofError):
            verify_absence_proof([ProofOp(type=PROOF_OP_ABSENT, key=other, data=ops[0].data), ops[1]], app_hash, keypath_for("recalls", other))
    # Wrong op types, missing store op, garbage data, a value op passed off as absence.
    with pytest.raises(ProofError):
        verify_absence_proof(ops[:1], app_hash, path)
    with pytest.raises(ProofError):
        verify_absence_proof([ProofOp(type="simple:v", key=b"k05", data=ops[0].data), ops[1]], app_hash, path)
    with pytest.raises(ProofError):
        verify_absence_proof([ProofOp(type=PROOF_OP_ABSENT, key=b"k05", data=b"\xff\xff"), ops[1]], app_hash, path)
    present_hash, present_ops = store_root_and_proofs(_stores(9), "recalls", b"k04")
    with pytest.raises(ProofError):
        verify_absence_proof(present_ops, present_hash, keypath_for("recalls", b"k04"))
    # An absence proof is no presence proof either.
    with pytest.raises(ProofError):
        verify_value_proof(ops, app_hash, path, b"v")


def test_a_false_total_moves_a_leaf_which_is_why_adjacency_is_read_from_the_path() -> None:
    # A tree of 3 proves its last leaf as index 1 of a tree of 2 (the aunt is the left subtree's root).
    leaves = [sha(b"\x00" + bytes([i])) for i in range(3)]
    tree = MerkleTree.from_leaf_hashes(leaves)
    real = tree.proof(2)
    assert Proof(2, 1, real.leaf_hash, real.aunts).compute_root() == tree.root


def test_absence_proof_size_and_verify_time_at_100k_keys() -> None:
    import time

    items = {f"00614141123452/S{i:07d}".encode(): sha(i.to_bytes(4, "big")) for i in range(0, 200_000, 2)}
    version = StoreVersion.from_items(items)
    assert len(version.keys) == 100_000
    root = version.root
    keys = [f"00614141123452/S{i:07d}".encode() for i in (1, 99_999, 199_999)] + [b"0", b"zz"]
    ops = [version.absence_op(k) for k in keys]
    sizes = [len(op.data) for op in ops]
    start = time.perf_counter()
    rounds = 200
    for _ in range(rounds):
        for key, op in zip(keys, ops):
            assert absent_store_root(key, op.data) == root
    per_proof_us = (time.perf_counter() - start) / (rounds * len(keys)) * 1e6
    print(f"absence proof at 10^5 keys: {max(sizes)} bytes (two paths of 17 aunts), verify {per_proof_us:.0f} us")
    # Two neighbours, each with at most ceil(log2 1e5) = 17 aunts of 34 bytes on the wire, plus keys.
    assert max(sizes) <= 2 * (17 * 34 + 80) + 16
    assert per_proof_us < 5_000
