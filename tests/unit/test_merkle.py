"""RFC 6962 trees and simple:v proofs against CometBFT's vectors and a plain recursive model of its code."""

from __future__ import annotations

import hashlib
import os

import pytest
from tendermint.crypto import proof_pb2

from shelfproof.ledger.proofs.merkle import (
    BUCKET_BITS,
    BUCKETS,
    EMPTY_ROOT,
    EMPTY_STORE_ROOT,
    bucket_leaf,
    bucket_of,
    bucket_path,
    bucket_tree,
    bucket_tree_changes,
    empty_node,
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


# --- the store layout: key in bucket, bucket in store, store in app ------------------------------------

STORES = {
    "products": {b"gtin/0001": b"widget", b"gtin/0002": b"gadget", b"gtin/0003": b"gizmo"},
    "serials": {f"s/{i:05d}".encode(): f"unit {i}".encode() for i in range(37)},
    "accounts": {b"acme": b"key-a"},
}


def model_store_root(items: dict[bytes, bytes]) -> bytes:
    """The notes' recipe with the recursive model only: buckets by SHA-256(key)'s top bits, each a sorted
    tree, the store the tree over every bucket's kv leaf (empty key, bucket root)."""
    buckets: dict[int, list[bytes]] = {}
    for key, value in sorted(items.items()):
        index = int.from_bytes(sha(key)[:4], "big") >> (32 - BUCKET_BITS)
        buckets.setdefault(index, []).append(kv_leaf(key, value))
    return recursive_root([kv_leaf(b"", recursive_root(buckets.get(b, []))) for b in range(BUCKETS)])


def test_three_level_proof_verifies_against_an_independent_app_hash() -> None:
    stores = {"serials": STORES["serials"], "accounts": STORES["accounts"]}
    app_hash, ops = store_root_and_proofs(stores, "serials", b"s/00017")
    roots = {name: model_store_root(items) for name, items in stores.items()}
    expected = recursive_root([kv_leaf(name.encode(), roots[name]) for name in sorted(stores)])
    assert app_hash == expected
    assert [op.key for op in ops] == [b"s/00017", b"", b"serials"]
    verify_value_proof(ops, app_hash, keypath_for("serials", b"s/00017"), b"unit 17")
    assert keypath_for("serials", b"s/00017") == [b"serials", b"s/00017"]


def test_empty_store_root_is_the_tree_of_empty_buckets() -> None:
    assert EMPTY_STORE_ROOT == model_store_root({})
    _, nodes = bucket_tree({})
    assert nodes == {}


def _flip(data: bytes, at: int = -1) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def test_three_level_tampering_fails() -> None:
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
        "bucket op left out": ([ops[0], ops[2]], app_hash, path, b"gadget"),
        "ops swapped": (ops[::-1], app_hash, path, b"gadget"),
        "no ops": ([], app_hash, path, b"gadget"),
    }
    for name, args in cases.items():
        with pytest.raises(ProofError):
            verify_value_proof(*args)
            pytest.fail(name)

    # Op-level tampering of the key op and of the bucket op: the key, an aunt, the index, the type, garbage.
    for at in (0, 1):
        inner = proof_pb2.ValueOp.FromString(ops[at].data)
        bad_aunt = proof_pb2.ValueOp()
        bad_aunt.CopyFrom(inner)
        if bad_aunt.proof.aunts:
            bad_aunt.proof.aunts[0] = _flip(bad_aunt.proof.aunts[0])
        else:
            bad_aunt.proof.aunts.append(sha(b"x"))
        bad_index = proof_pb2.ValueOp()
        bad_index.CopyFrom(inner)
        bad_index.proof.index = (inner.proof.index + 1) % max(inner.proof.total, 2)
        variants = [
            ProofOp(type="simple:v", key=b"gtin/0003" if at == 0 else b"x", data=ops[at].data),
            ProofOp(type="simple:v", key=ops[at].key, data=bad_aunt.SerializeToString()),
            ProofOp(type="simple:v", key=ops[at].key, data=bad_index.SerializeToString()),
            ProofOp(type="iavl:v", key=ops[at].key, data=ops[at].data),
            ProofOp(type="simple:v", key=ops[at].key, data=b"\xff\xff\xff"),
        ]
        for variant in variants:
            forged = list(ops)
            forged[at] = variant
            with pytest.raises(ProofError):
                verify_value_proof(forged, app_hash, path, b"gadget")


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


def test_bucket_tree_changes_match_a_full_rebuild() -> None:
    items = {f"k{i}".encode(): f"v{i}".encode() for i in range(300)}
    _, nodes = bucket_tree(items)
    more = {**items, b"k7": b"changed", b"new": b"value"}
    _, rebuilt = bucket_tree(more)
    buckets, _ = bucket_tree(more)
    changed_buckets = {bucket_of(b"k7"), bucket_of(b"new")}
    leaves = {b: bucket_leaf(buckets[b][1].root) for b in changed_buckets}
    changes = bucket_tree_changes(leaves, lambda n: nodes.get(n) or empty_node(n))
    assert len(changes) <= 2 * (BUCKET_BITS + 1)
    assert changes[1] == rebuilt[1] != nodes[1]
    proof = bucket_path(bucket_of(b"new"), lambda n: changes.get(n) or nodes.get(n) or empty_node(n))
    assert proof.total == BUCKETS and len(proof.aunts) == BUCKET_BITS and proof.compute_root() == rebuilt[1]


# --- absence: adjacent neighbours in a sorted tree (a bucket), under the key's own bucket ---------------

from shelfproof.ledger.proofs.merkle import (  # noqa: E402 - grouped with the tests that use them
    PROOF_OP_ABSENT,
    absence_op,
    absent_store_root,
    verify_absence_proof,
    verify_store_proof,
)
from shelfproof.ledger.v1.ledger_pb2 import AbsenceNeighbour, AbsenceProof  # noqa: E402


def _sorted(n: int) -> dict[bytes, bytes]:
    """n keys k00, k02, k04, ... (gaps for absent keys), as one sorted tree: a bucket."""
    return {f"k{2 * i:02d}".encode(): f"v{i}".encode() for i in range(n)}


def _bucket_absence(items: dict[bytes, bytes], key: bytes) -> tuple[bytes, bytes, list[bytes], MerkleTree]:
    keys = sorted(items)
    tree = MerkleTree.from_leaf_hashes([kv_leaf_hash(k, items[k]) for k in keys])
    return tree.root, absence_op(key, keys, tree, lambda k: sha(items[k])).data, keys, tree


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_absence_is_provable_at_every_position_of_a_bucket(n: int) -> None:
    items = _sorted(n)
    missing = [b"a", *[f"k{2 * i + 1:02d}".encode() for i in range(n)], b"z"] if n else [b"a", b"k01", b"z"]
    for key in missing:
        root, data, _, _ = _bucket_absence(items, key)
        assert absent_store_root(key, data) == root
        proof = AbsenceProof.FromString(data)
        assert proof.total == n and proof.HasField("left") == (n > 0 and key != b"a")
        # The same proof says nothing about another key, present or outside its neighbours.
        for other in (b"k00", b"k02", b"0", b"zz"):
            if other in items or not (proof.left.key < other < (proof.right.key or b"\xff")):
                with pytest.raises(ProofError):
                    if absent_store_root(other, data) == root:
                        raise AssertionError(f"{other!r} proven absent by the proof of {key!r}")


def test_absence_is_provable_through_the_whole_layout() -> None:
    stores = {"recalls": _sorted(40), "items": {b"x": b"1"}}
    for key in (b"a", b"k05", b"k39", b"z", b"00614141123452/L8"):
        app_hash, ops = store_root_and_proofs(stores, "recalls", key)
        assert [op.type for op in ops] == [PROOF_OP_ABSENT, "simple:v", "simple:v"]
        verify_absence_proof(ops, app_hash, keypath_for("recalls", key))
        verify_store_proof(ops, app_hash, keypath_for("recalls", key), None)
        with pytest.raises(ProofError):
            verify_absence_proof(ops, sha(app_hash), keypath_for("recalls", key))
        with pytest.raises(ProofError):
            verify_absence_proof(ops, app_hash, keypath_for("items", key))


def test_absence_from_the_wrong_bucket_or_without_one_is_rejected() -> None:
    """An empty-keyed bucket op consumes no keypath part, so the verifier itself places the bucket."""
    stores = {"recalls": _sorted(40), "items": {b"x": b"1"}}
    present = b"k04"
    present_hash, present_ops = store_root_and_proofs(stores, "recalls", present)
    # A real absence proof of another key, from another (maybe empty) bucket, offered for a present key.
    other = next(k for k in (f"m{i}".encode() for i in range(1000)) if bucket_of(k) != bucket_of(present))
    app_hash, ops = store_root_and_proofs(stores, "recalls", other)
    assert app_hash == present_hash
    relabelled = [ProofOp(type=PROOF_OP_ABSENT, key=present, data=ops[0].data), ops[1], ops[2]]
    with pytest.raises(ProofError):
        verify_absence_proof(relabelled, app_hash, keypath_for("recalls", present))
    # The bucket op moved to the key's bucket: its path no longer leads to the store root.
    moved = proof_pb2.ValueOp.FromString(ops[1].data)
    moved.proof.index = bucket_of(present)
    with pytest.raises(ProofError):
        verify_absence_proof(
            [relabelled[0], ProofOp(type="simple:v", key=b"", data=moved.SerializeToString()), ops[2]], app_hash,
            keypath_for("recalls", present),
        )
    # The old two-op form (absent op straight under the store op): refused whatever it claims.
    with pytest.raises(ProofError):
        verify_absence_proof([ops[0], ops[2]], app_hash, keypath_for("recalls", other))
    # A bucket op with a key, or a claimed total other than BUCKETS.
    keyed = ProofOp(type="simple:v", key=b"recalls", data=ops[1].data)
    with pytest.raises(ProofError):
        verify_absence_proof([ops[0], keyed, ops[2]], app_hash, keypath_for("recalls", other))
    short = proof_pb2.ValueOp.FromString(ops[1].data)
    short.proof.total = 2
    with pytest.raises(ProofError):
        verify_absence_proof([ops[0], ProofOp(type="simple:v", data=short.SerializeToString()), ops[2]], app_hash, keypath_for("recalls", other))
    # A presence proof is no absence proof, and the other way round.
    with pytest.raises(ProofError):
        verify_absence_proof(present_ops, present_hash, keypath_for("recalls", present))
    with pytest.raises(ProofError):
        verify_value_proof(ops, app_hash, keypath_for("recalls", other), b"v")


def test_forged_absence_proofs_are_rejected() -> None:
    items = _sorted(9)
    root, data, keys, tree = _bucket_absence(items, b"k05")
    proof = AbsenceProof.FromString(data)
    assert absent_store_root(b"k05", data) == root
    assert (proof.left.key, proof.right.key, proof.left.index, proof.right.index) == (b"k04", b"k06", 2, 3)

    def neighbour(i: int) -> AbsenceNeighbour:
        return AbsenceNeighbour(key=keys[i], value_hash=sha(items[keys[i]]), index=i, aunts=tree.proof(i).aunts)

    forgeries = {
        # Neighbours that are real leaves but not adjacent: k04 and k08 hide k06 (a present key).
        "not adjacent": AbsenceProof(total=9, left=neighbour(2), right=neighbour(4)),
        # The same two leaves with the right one's index moved to look adjacent: its path no longer leads to the root.
        "index lies": AbsenceProof(
            total=9, left=neighbour(2),
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
        try:
            got = absent_store_root(b"k05", forged.SerializeToString())
        except ProofError:
            continue
        assert got != root, f"accepted: {name}"
    for other in (b"k07", b"k03", b"k04", b"k06"):
        with pytest.raises(ProofError):
            if absent_store_root(other, data) == root:
                raise AssertionError(other)
    with pytest.raises(ProofError):
        absent_store_root(b"k05", b"\xff\xff")
    with pytest.raises(ProofError):
        absent_store_root(b"", data)


def test_a_false_total_moves_a_leaf_which_is_why_adjacency_is_read_from_the_path() -> None:
    # A tree of 3 proves its last leaf as index 1 of a tree of 2 (the aunt is the left subtree's root).
    leaves = [sha(b"\x00" + bytes([i])) for i in range(3)]
    tree = MerkleTree.from_leaf_hashes(leaves)
    real = tree.proof(2)
    assert Proof(2, 1, real.leaf_hash, real.aunts).compute_root() == tree.root


def test_absence_proof_size_and_verify_time_at_100k_keys() -> None:
    import time

    items = {f"00614141123452/S{i:07d}".encode(): sha(i.to_bytes(4, "big")) for i in range(0, 200_000, 2)}
    buckets, nodes = bucket_tree(items)
    store_root = nodes[1]
    keys = [f"00614141123452/S{i:07d}".encode() for i in (1, 99_999, 199_999)] + [b"0", b"zz"]
    proofs = []
    for key in keys:
        bucket_keys, tree = buckets.get(bucket_of(key), ([], MerkleTree.from_leaf_hashes([])))
        proofs.append(
            (
                absence_op(key, bucket_keys, tree, lambda k: sha(items[k])),
                value_op(b"", bucket_path(bucket_of(key), lambda n: nodes.get(n) or empty_node(n))),
            )
        )
    sizes = [len(a.data) + len(b.data) for a, b in proofs]
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        for key, (absent, bucket) in zip(keys, proofs):
            verify_absence_proof([absent, bucket, value_op(b"s", Proof(1, 0, kv_leaf_hash(b"s", store_root), ()))],
                                 sha(b"\x00" + kv_leaf(b"s", store_root)), [b"s", key])
    per_proof_us = (time.perf_counter() - start) / (rounds * len(keys)) * 1e6
    print(f"absence proof at 10^5 keys: {max(sizes)} bytes (bucket neighbours and {BUCKET_BITS} aunts), verify {per_proof_us:.0f} us")
    # Neighbours in a bucket of about one key and one bucket path of BUCKET_BITS aunts (34 bytes on the wire).
    assert max(sizes) <= 2 * (4 * 34 + 80) + BUCKET_BITS * 34 + 120
    assert per_proof_us < 5_000
