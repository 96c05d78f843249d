"""Header hashing, vote sign bytes and commit verification against CometBFT's Go test vectors and rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from nacl.signing import SigningKey
from tendermint.crypto import keys_pb2
from tendermint.types import canonical_pb2, types_pb2, validator_pb2
from tendermint.version import types_pb2 as version_pb2

from shelfproof.ledger.proofs import light

from shelfproof.ledger.engines import rpc_json
from shelfproof.ledger.proofs.light import (
    LightVerificationError,
    block_id_for,
    header_hash,
    sign_commit,
    validator_set_hash,
    verify_commit,
    verify_query,
    vote_sign_bytes,
)
from shelfproof.ledger.proofs.merkle import MerkleTree, ProofError, keypath_for, store_root_and_proofs
from shelfproof.ledger.engines.rpc_json import format_time, parse_time

CHAIN = "shelfproof-test"


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    light.clear_verification_cache()


# --- vectors from the Go tests ------------------------------------------------------------------------

ZERO_TIME = bytes([0x2A, 0xB, 0x8, 0x80, 0x92, 0xB8, 0xC3, 0x98, 0xFE, 0xFF, 0xFF, 0xFF, 0x1])
ONE_FIXED = bytes([0x1, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    ("chain_id", "height", "round", "msg_type", "expected"),
    [  # types/vote_test.go TestVoteSignBytesTestVectors (the vote extension case signs the same bytes)
        ("", 0, 0, 0, bytes([0xD]) + ZERO_TIME),
        ("", 1, 1, 2, bytes([0x21, 0x8, 0x2, 0x11]) + ONE_FIXED + b"\x19" + ONE_FIXED + ZERO_TIME),
        ("", 1, 1, 1, bytes([0x21, 0x8, 0x1, 0x11]) + ONE_FIXED + b"\x19" + ONE_FIXED + ZERO_TIME),
        ("", 1, 1, 0, bytes([0x1F, 0x11]) + ONE_FIXED + b"\x19" + ONE_FIXED + ZERO_TIME),
        (
            "test_chain_id",
            1,
            1,
            0,
            bytes([0x2E, 0x11]) + ONE_FIXED + b"\x19" + ONE_FIXED + ZERO_TIME + b"\x32\x0dtest_chain_id",
        ),
    ],
)
def test_vote_sign_bytes_vectors(chain_id: str, height: int, round: int, msg_type: int, expected: bytes) -> None:
    assert vote_sign_bytes(chain_id, height, round, None, None, msg_type=msg_type) == expected
    # A zero BlockID is a nil vote: it is left out exactly like no BlockID.
    assert vote_sign_bytes(chain_id, height, round, types_pb2.BlockID(), None, msg_type=msg_type) == expected


def test_vote_sign_bytes_match_canonical_vote_message() -> None:
    # types/vote_test.go exampleVote, re-encoded through the generated CanonicalVote with every
    # non-nullable submessage set explicitly.
    stamp = parse_time("2017-12-25T03:00:01.234Z")
    block_id = types_pb2.BlockID(
        hash=sha(b"blockID_hash"),
        part_set_header=types_pb2.PartSetHeader(total=1000000, hash=sha(b"blockID_part_set_header_hash")),
    )
    canonical = canonical_pb2.CanonicalVote(
        type=types_pb2.SIGNED_MSG_TYPE_PRECOMMIT,
        height=12345,
        round=2,
        block_id=canonical_pb2.CanonicalBlockID(
            hash=block_id.hash,
            part_set_header=canonical_pb2.CanonicalPartSetHeader(
                total=block_id.part_set_header.total, hash=block_id.part_set_header.hash
            ),
        ),
        timestamp=stamp,
        chain_id="test_chain_id",
    ).SerializeToString()
    assert vote_sign_bytes("test_chain_id", 12345, 2, block_id, stamp) == bytes([len(canonical)]) + canonical


def go_header() -> types_pb2.Header:
    """types/block_test.go TestHeaderHash's header."""
    return types_pb2.Header(
        version=version_pb2.Consensus(block=1, app=2),
        chain_id="chainId",
        height=3,
        time=parse_time("2019-10-13T16:14:44Z"),
        last_block_id=types_pb2.BlockID(
            hash=bytes(32), part_set_header=types_pb2.PartSetHeader(total=6, hash=bytes(32))
        ),
        last_commit_hash=sha(b"last_commit_hash"),
        data_hash=sha(b"data_hash"),
        validators_hash=sha(b"validators_hash"),
        next_validators_hash=sha(b"next_validators_hash"),
        consensus_hash=sha(b"consensus_hash"),
        app_hash=sha(b"app_hash"),
        last_results_hash=sha(b"last_results_hash"),
        evidence_hash=sha(b"evidence_hash"),
        proposer_address=sha(b"proposer_address")[:20],
    )


def test_header_hash_vector() -> None:
    expected = "F740121F553B5418C3EFBD343C2DBFE9E007BB67B0D020A0741374BAB65242A4"
    assert header_hash(go_header()).hex().upper() == expected


def test_header_hash_covers_every_field_and_needs_validators_hash() -> None:
    base = header_hash(go_header())
    for field in ("chain_id", "height", "app_hash", "proposer_address", "evidence_hash"):
        h = go_header()
        setattr(h, field, "x" if field == "chain_id" else (4 if field == "height" else b"\x01" * 32))
        assert header_hash(h) != base, field
    h = go_header()
    h.time.nanos = 1
    assert header_hash(h) != base
    h = go_header()
    h.last_block_id.part_set_header.total = 7
    assert header_hash(h) != base
    h = go_header()
    h.validators_hash = b""
    with pytest.raises(LightVerificationError):
        header_hash(h)


def test_header_hash_of_a_first_block_matches_generated_wrappers() -> None:
    # Height 1 has an empty last_block_id: gogoproto still writes BlockID{part_set_header: {}}.
    header = go_header()
    header.height = 1
    header.ClearField("last_block_id")
    header.last_commit_hash = b""
    last_block_id = types_pb2.BlockID()
    last_block_id.part_set_header.SetInParent()
    leaves = [
        header.version.SerializeToString(),
        wrappers_pb2.StringValue(value=header.chain_id).SerializeToString(),
        wrappers_pb2.Int64Value(value=header.height).SerializeToString(),
        header.time.SerializeToString(),
        last_block_id.SerializeToString(),
    ] + [
        wrappers_pb2.BytesValue(value=getattr(header, name)).SerializeToString()
        for name in (
            "last_commit_hash", "data_hash", "validators_hash", "next_validators_hash", "consensus_hash",
            "app_hash", "last_results_hash", "evidence_hash", "proposer_address",
        )
    ]
    assert last_block_id.SerializeToString() == b"\x12\x00"
    assert header_hash(header) == MerkleTree.from_items(leaves).root


def test_encode_header_matches_protobuf_when_all_fields_present() -> None:
    header = go_header()
    assert light.encode_header(header) == header.SerializeToString()


def test_time_round_trip_keeps_nanoseconds() -> None:
    for text in ("2026-11-25T01:37:34.656179524Z", "2019-10-13T16:14:44Z", "0001-01-01T00:00:00Z", "2017-12-25T03:00:01.234Z"):
        assert format_time(parse_time(text)) == text
    assert parse_time("0001-01-01T00:00:00Z").seconds == light.GO_ZERO_TIME_SECONDS
    assert parse_time("2026-11-25T03:37:34.5+02:00") == Timestamp(seconds=parse_time("2026-11-25T01:37:34Z").seconds, nanos=500_000_000)


# --- a small chain of our own ----------------------------------------------------------------------------


class Signer:
    def __init__(self, seed: int, power: int) -> None:
        self.key = SigningKey(sha(f"validator {seed}".encode()))
        self.public_key = bytes(self.key.verify_key)
        self.address = sha(self.public_key)[:20]
        self.power = power

    def validator(self) -> validator_pb2.Validator:
        return validator_pb2.Validator(
            address=self.address,
            pub_key=keys_pb2.PublicKey(ed25519=self.public_key),
            voting_power=self.power,
        )


def valset(signers: list[Signer]) -> validator_pb2.ValidatorSet:
    vals = [s.validator() for s in signers]
    return validator_pb2.ValidatorSet(validators=vals, total_voting_power=sum(v.voting_power for v in vals))


def make_header(signers: list[Signer], height: int = 7, app_hash: bytes = b"\x42" * 32, chain_id: str = CHAIN) -> types_pb2.Header:
    vhash = validator_set_hash([s.validator() for s in signers])
    return types_pb2.Header(
        version=version_pb2.Consensus(block=11, app=1),
        chain_id=chain_id,
        height=height,
        time=Timestamp(seconds=1_790_000_000, nanos=123_456_789),
        last_block_id=types_pb2.BlockID(hash=b"\x01" * 32, part_set_header=types_pb2.PartSetHeader(total=1, hash=b"\x02" * 32)),
        last_commit_hash=MerkleTree.from_items([b"c"]).root,
        data_hash=MerkleTree.from_items([]).root,
        validators_hash=vhash,
        next_validators_hash=vhash,
        consensus_hash=b"\x03" * 32,
        app_hash=app_hash,
        last_results_hash=MerkleTree.from_items([]).root,
        evidence_hash=MerkleTree.from_items([]).root,
        proposer_address=signers[0].address,
    )


def multi_commit(header: types_pb2.Header, signers: list[Signer], flags: list[int], chain_id: str = CHAIN) -> types_pb2.Commit:
    """Each validator's precommit, built from the vote sign bytes (one timestamp per signer)."""
    block_id = block_id_for(header)
    commit = types_pb2.Commit(height=header.height, round=1, block_id=block_id)
    for i, (signer, flag) in enumerate(zip(signers, flags)):
        if flag == light.FLAG_ABSENT:
            commit.signatures.add(block_id_flag=flag)
            continue
        ts = Timestamp(seconds=header.time.seconds + 1, nanos=i)
        vote_block = block_id if flag == light.FLAG_COMMIT else None
        message = vote_sign_bytes(chain_id, header.height, 1, vote_block, ts)
        commit.signatures.add(
            block_id_flag=flag, validator_address=signer.address, timestamp=ts, signature=signer.key.sign(message).signature
        )
    return commit


def test_validator_set_hash_is_simple_validator_leaves() -> None:
    signers = [Signer(i, 10 - i) for i in range(3)]
    leaves = [
        validator_pb2.SimpleValidator(pub_key=keys_pb2.PublicKey(ed25519=s.public_key), voting_power=s.power).SerializeToString()
        for s in signers
    ]
    assert validator_set_hash([s.validator() for s in signers]) == MerkleTree.from_items(leaves).root


def test_sign_commit_round_trip() -> None:
    signer = Signer(1, 10)
    header = make_header([signer])
    block_id = block_id_for(header)
    assert block_id.hash == header_hash(header)
    assert block_id.part_set_header.total == 1 and len(block_id.part_set_header.hash) == 32
    commit = sign_commit(CHAIN, header, block_id, (signer.key, signer.address), Timestamp(seconds=1_790_000_001))
    assert commit.round == 0 and len(commit.signatures) == 1
    check = verify_commit(CHAIN, types_pb2.SignedHeader(header=header, commit=commit), valset([signer]), use_cache=False)
    assert (check.height, check.signed_power, check.total_power, check.signers) == (7, 10, 10, 1)
    assert check.header_hash == block_id.hash
    # The signature is over CometBFT's precommit sign bytes, checked with the public key alone.
    sig = commit.signatures[0]
    signer.key.verify_key.verify(vote_sign_bytes(CHAIN, 7, 0, block_id, sig.timestamp), sig.signature)


def test_sign_commit_refuses_a_foreign_address() -> None:
    signer, other = Signer(1, 10), Signer(2, 10)
    header = make_header([signer])
    with pytest.raises(ValueError):
        sign_commit(CHAIN, header, block_id_for(header), (signer.key, other.address), header.time)


def signed(signers: list[Signer], flags: list[int], **kw) -> types_pb2.SignedHeader:
    header = make_header(signers, **kw)
    return types_pb2.SignedHeader(header=header, commit=multi_commit(header, signers, flags))


C, A, N = light.FLAG_COMMIT, light.FLAG_ABSENT, light.FLAG_NIL


def test_multi_validator_commit_thresholds() -> None:
    signers = [Signer(i, 10) for i in range(4)]
    vals = valset(signers)
    check = verify_commit(CHAIN, signed(signers, [C, C, C, A]), vals, use_cache=False)
    assert (check.signed_power, check.total_power, check.signers) == (30, 40, 3)
    for flags in ([C, C, A, A], [C, C, N, N], [C, A, A, A], [A, A, A, A]):
        with pytest.raises(LightVerificationError, match="2/3"):
            verify_commit(CHAIN, signed(signers, flags), vals, use_cache=False)


def test_two_thirds_is_strict() -> None:
    signers = [Signer(0, 2), Signer(1, 1)]  # 2 of 3 is exactly 2/3: not enough
    with pytest.raises(LightVerificationError, match="2/3"):
        verify_commit(CHAIN, signed(signers, [C, A]), valset(signers), use_cache=False)
    verify_commit(CHAIN, signed(signers, [C, C]), valset(signers), use_cache=False)


def test_forged_signature_is_rejected() -> None:
    signers = [Signer(i, 10) for i in range(4)]
    sh = signed(signers, [C, C, C, C])
    sig = bytearray(sh.commit.signatures[3].signature)
    sig[5] ^= 0x40
    sh.commit.signatures[3].signature = bytes(sig)
    # Three honest signatures already pass 2/3, yet the bad fourth fails the commit.
    with pytest.raises(LightVerificationError, match="wrong signature #3"):
        verify_commit(CHAIN, sh, valset(signers), use_cache=False)
    # A signature by another key in the right slot fails too.
    sh = signed(signers, [C, C, C, C])
    intruder = Signer(99, 10)
    sig0 = sh.commit.signatures[0]
    sig0.signature = intruder.key.sign(vote_sign_bytes(CHAIN, sh.header.height, 1, sh.commit.block_id, sig0.timestamp)).signature
    with pytest.raises(LightVerificationError, match="wrong signature #0"):
        verify_commit(CHAIN, sh, valset(signers), use_cache=False)


def test_wrong_chain_id_is_rejected() -> None:
    signers = [Signer(1, 10)]
    sh = signed(signers, [C])
    with pytest.raises(LightVerificationError, match="chain"):
        verify_commit("other-chain", sh, valset(signers), use_cache=False)
    # Signed for another chain while the header claims ours: the signature fails.
    header = make_header(signers)
    sh = types_pb2.SignedHeader(header=header, commit=multi_commit(header, signers, [C], chain_id="other-chain"))
    with pytest.raises(LightVerificationError, match="wrong signature"):
        verify_commit(CHAIN, sh, valset(signers), use_cache=False)


def test_structural_mismatches_are_rejected() -> None:
    signers = [Signer(i, 10) for i in range(3)]
    vals = valset(signers)

    sh = signed(signers, [C, C, C])
    sh.header.app_hash = b"\x43" * 32  # the commit signed the original header
    with pytest.raises(LightVerificationError, match="header hashes to"):
        verify_commit(CHAIN, sh, vals, use_cache=False)

    sh = signed(signers, [C, C, C])
    with pytest.raises(LightVerificationError, match="validators_hash"):
        verify_commit(CHAIN, sh, valset([signers[1], signers[0], signers[2]]), use_cache=False)

    sh = signed(signers, [C, C, C])
    del sh.commit.signatures[2]
    with pytest.raises(LightVerificationError, match="2 signatures for 3 validators"):
        verify_commit(CHAIN, sh, vals, use_cache=False)

    sh = signed(signers, [C, C, C])
    sh.commit.signatures[1].validator_address = signers[2].address
    with pytest.raises(LightVerificationError, match="address mismatch at index 1"):
        verify_commit(CHAIN, sh, vals, use_cache=False)

    sh = signed(signers, [C, C, C])
    sh.commit.height += 1
    with pytest.raises(LightVerificationError, match="height"):
        verify_commit(CHAIN, sh, vals, use_cache=False)

    sh = signed(signers, [C, C, C])
    sh.commit.signatures[0].block_id_flag = 7
    with pytest.raises(LightVerificationError, match="unknown block_id_flag"):
        verify_commit(CHAIN, sh, vals, use_cache=False)


def test_cache_serves_the_same_header_only() -> None:
    signers = [Signer(i, 10) for i in range(4)]
    vals = valset(signers)
    sh = signed(signers, [C, C, C, C])
    first = verify_commit(CHAIN, sh, vals)
    assert verify_commit(CHAIN, sh, vals) is first
    # Another header at the same height misses the cache and is checked in full.
    forged = types_pb2.SignedHeader()
    forged.CopyFrom(sh)
    forged.header.app_hash = b"\x00" * 32
    with pytest.raises(LightVerificationError):
        verify_commit(CHAIN, forged, vals)
    # And the cached entry is not reused for another chain id.
    with pytest.raises(LightVerificationError):
        verify_commit("other", sh, vals)


def test_verify_query_proves_a_value_under_the_next_header() -> None:
    signer = Signer(3, 10)
    stores = {"products": {b"gtin/1": b"widget", b"gtin/2": b"gadget"}, "serials": {b"s/1": b"one"}}
    app_hash, ops = store_root_and_proofs(stores, "products", b"gtin/2")
    header = make_header([signer], height=11, app_hash=app_hash)
    block_id = block_id_for(header)
    sh = types_pb2.SignedHeader(header=header, commit=sign_commit(CHAIN, header, block_id, (signer.key, signer.address), header.time))
    path = keypath_for("products", b"gtin/2")
    check = verify_query(CHAIN, ops, path, b"gadget", sh, valset([signer]), query_height=10)
    assert check.height == 11
    with pytest.raises(ProofError):
        verify_query(CHAIN, ops, path, b"widget", sh, valset([signer]))
    with pytest.raises(LightVerificationError, match="needs header 10"):
        verify_query(CHAIN, ops, path, b"gadget", sh, valset([signer]), query_height=9)
    with pytest.raises(LightVerificationError):
        verify_query(CHAIN, ops, path, b"gadget", sh, valset([Signer(4, 10)]))


def test_verify_query_proves_an_absence_under_the_next_header() -> None:
    signer = Signer(3, 10)
    stores = {"recalls": {b"gtin/L1": b"recalled", b"gtin/L3": b"recalled"}, "items": {b"i": b"1"}}
    app_hash, ops = store_root_and_proofs(stores, "recalls", b"gtin/L2")
    header = make_header([signer], height=11, app_hash=app_hash)
    sh = types_pb2.SignedHeader(header=header, commit=sign_commit(CHAIN, header, block_id_for(header), (signer.key, signer.address), header.time))
    verify_query(CHAIN, ops, keypath_for("recalls", b"gtin/L2"), None, sh, valset([signer]), query_height=10)
    with pytest.raises(ProofError):  # the absence of L2 says nothing about L1, which is recalled
        verify_query(CHAIN, ops, keypath_for("recalls", b"gtin/L1"), None, sh, valset([signer]))
    with pytest.raises(ProofError):  # nor is it a value
        verify_query(CHAIN, ops, keypath_for("recalls", b"gtin/L2"), b"recalled", sh, valset([signer]))


def test_json_conversion_of_a_commit_with_an_absent_vote() -> None:
    signers = [Signer(i, 10) for i in range(4)]
    sh = signed(signers, [C, A, C, C])
    sh.commit.signatures[1].Clear()
    sh.commit.signatures[1].block_id_flag = A
    h, c = sh.header, sh.commit
    hexu = lambda b: b.hex().upper()  # noqa: E731
    block_id = lambda b: {"hash": hexu(b.hash), "parts": {"total": b.part_set_header.total, "hash": hexu(b.part_set_header.hash)}}  # noqa: E731
    as_json = {
        "signed_header": {
            "header": {
                "version": {"block": str(h.version.block), "app": str(h.version.app)},
                "chain_id": h.chain_id,
                "height": str(h.height),
                "time": format_time(h.time),
                "last_block_id": block_id(h.last_block_id),
                **{name: hexu(getattr(h, name)) for name in (
                    "last_commit_hash", "data_hash", "validators_hash", "next_validators_hash", "consensus_hash",
                    "app_hash", "last_results_hash", "evidence_hash", "proposer_address")},
            },
            "commit": {
                "height": str(c.height),
                "round": c.round,
                "block_id": block_id(c.block_id),
                "signatures": [
                    {"block_id_flag": 1, "validator_address": "", "timestamp": "0001-01-01T00:00:00Z", "signature": None}
                    if s.block_id_flag == A
                    else {
                        "block_id_flag": s.block_id_flag,
                        "validator_address": hexu(s.validator_address),
                        "timestamp": format_time(s.timestamp),
                        "signature": base64.b64encode(s.signature).decode(),
                    }
                    for s in c.signatures
                ],
            },
        },
        "canonical": True,
    }
    vals_json = [
        {
            "address": hexu(s.address),
            "pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(s.public_key).decode()},
            "voting_power": str(s.power),
            "proposer_priority": "0",
        }
        for s in signers
    ]
    parsed = rpc_json.signed_header_from_json(as_json)
    assert header_hash(parsed.header) == header_hash(h)
    assert parsed.commit.signatures[1].block_id_flag == A and not parsed.commit.signatures[1].signature
    vset = rpc_json.validator_set_from_json(vals_json)
    assert vset.total_voting_power == 40
    check = verify_commit(CHAIN, parsed, vset, use_cache=False)
    assert (check.signed_power, check.signers) == (30, 3)

    ops = [{"type": "simple:v", "key": base64.b64encode(b"k").decode(), "data": base64.b64encode(b"\x0a\x01k").decode()}]
    for wrapped in ({"proofOps": {"ops": ops}}, {"proof_ops": {"ops": ops}}, {"ops": ops}, ops):
        (op,) = rpc_json.proof_ops_from_json(wrapped)
        assert (op.type, op.key, op.data) == ("simple:v", b"k", b"\x0a\x01k")
    assert rpc_json.proof_ops_from_json({"proofOps": None}) == []
