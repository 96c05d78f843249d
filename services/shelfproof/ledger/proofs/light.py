"""Light-client checks of CometBFT v0.38 headers and commits, and signing for the embedded engine.

Byte layouts follow the Go code of v0.38.25 (types/block.go Header.Hash, types/vote.go VoteSignBytes,
types/canonical.go, types/validator_set.go Hash, types/validation.go VerifyCommitLight). They are
encoded by hand rather than with the generated Python classes because gogoproto writes non-nullable
submessages (Timestamp, BlockID, PartSetHeader, Consensus) even when empty, and Python's protobuf
leaves out a submessage that was never set; a hand encoder also skips building throwaway messages.

Trust: ``verify_commit`` proves that the validator set it is given signed the header. It is only as
trustworthy as that set, so callers must take it from a trusted source (genesis, a pinned set, or a
header verified earlier whose next_validators_hash matches) and not merely from the same node.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from google.protobuf import timestamp_pb2
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey
from tendermint.types import types_pb2, validator_pb2

from shelfproof.ledger.proofs.merkle import MerkleTree, ProofOpLike, leaf_hash, uvarint, verify_store_proof

# The voting power the embedded engine gives its one validator: a trust file names only that key.
EMBEDDED_VALIDATOR_POWER = 10

PRECOMMIT = types_pb2.SIGNED_MSG_TYPE_PRECOMMIT  # 2
FLAG_ABSENT = validator_pb2.BLOCK_ID_FLAG_ABSENT  # 1
FLAG_COMMIT = validator_pb2.BLOCK_ID_FLAG_COMMIT  # 2
FLAG_NIL = validator_pb2.BLOCK_ID_FLAG_NIL  # 3
ADDRESS_SIZE = 20
MAX_SIGNATURE_SIZE = 64
# Go's zero time.Time (0001-01-01T00:00:00Z) as a Timestamp: what gogoproto decodes an absent
# non-nullable stdtime field to, and what it encodes a zero time as.
GO_ZERO_TIME_SECONDS = -62135596800

_sha256 = hashlib.sha256


class LightVerificationError(ValueError):
    """A header, commit or validator set fails CometBFT's light-client rules."""


@dataclass(frozen=True, slots=True)
class CommitCheck:
    """What a verified commit established: more than 2/3 of ``total_power`` signed this header."""

    height: int
    signed_power: int
    total_power: int
    signers: int
    header_hash: bytes


# --- protobuf wire helpers ---------------------------------------------------------------------------


def _varint64(n: int) -> bytes:
    """int64/int32 varint: negatives are their 64-bit two's complement (10 bytes)."""
    return uvarint(n & 0xFFFFFFFFFFFFFFFF if n < 0 else n)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + uvarint(len(payload)) + payload


def _bytes_field(tag: int, value: bytes) -> bytes:
    """proto3 scalar bytes/string: left out when empty."""
    return _len_field(tag, value) if value else b""


def _timestamp_bytes(seconds: int, nanos: int) -> bytes:
    out = b""
    if seconds:
        out += b"\x08" + _varint64(seconds)
    if nanos:
        out += b"\x10" + _varint64(nanos)
    return out


def _ts_bytes(ts: timestamp_pb2.Timestamp | None, present: bool = True) -> bytes:
    if ts is None or not present:
        return _timestamp_bytes(GO_ZERO_TIME_SECONDS, 0)
    return _timestamp_bytes(ts.seconds, ts.nanos)


def _part_set_header_bytes(psh: types_pb2.PartSetHeader) -> bytes:
    out = b"\x08" + uvarint(psh.total) if psh.total else b""
    return out + _bytes_field(0x12, psh.hash)


def _block_id_bytes(block_id: types_pb2.BlockID) -> bytes:
    """BlockID as gogoproto writes it: part_set_header is non-nullable, so always present."""
    return _bytes_field(0x0A, block_id.hash) + _len_field(0x12, _part_set_header_bytes(block_id.part_set_header))


def _consensus_bytes(header: types_pb2.Header) -> bytes:
    v = header.version
    out = b"\x08" + uvarint(v.block) if v.block else b""
    return out + (b"\x10" + uvarint(v.app) if v.app else b"")


def _cdc_bytes(value: bytes) -> bytes:
    """types/encoding_helper.go cdcEncode of HexBytes: BytesValue{value}, empty for empty."""
    return _len_field(0x0A, value) if value else b""


# --- headers ----------------------------------------------------------------------------------------


def header_hash(header: types_pb2.Header) -> bytes:
    """Header.Hash: the Merkle root of 14 field encodings, in struct order."""
    if not header.validators_hash:
        # Go returns nil here; no commit can be for such a header.
        raise LightVerificationError("header without validators_hash has no hash")
    chain_id = header.chain_id.encode()
    height = header.height
    items = (
        _consensus_bytes(header),
        _len_field(0x0A, chain_id) if chain_id else b"",
        b"\x08" + _varint64(height) if height else b"",
        _ts_bytes(header.time, header.HasField("time")),
        _block_id_bytes(header.last_block_id),
        _cdc_bytes(header.last_commit_hash),
        _cdc_bytes(header.data_hash),
        _cdc_bytes(header.validators_hash),
        _cdc_bytes(header.next_validators_hash),
        _cdc_bytes(header.consensus_hash),
        _cdc_bytes(header.app_hash),
        _cdc_bytes(header.last_results_hash),
        _cdc_bytes(header.evidence_hash),
        _cdc_bytes(header.proposer_address),
    )
    return MerkleTree.from_items(items).root


def encode_header(header: types_pb2.Header) -> bytes:
    """The Header as Go's gogoproto Marshal writes it (non-nullable submessages always present)."""
    height = header.height
    return b"".join(
        (
            _len_field(0x0A, _consensus_bytes(header)),
            _bytes_field(0x12, header.chain_id.encode()),
            b"\x18" + _varint64(height) if height else b"",
            _len_field(0x22, _ts_bytes(header.time, header.HasField("time"))),
            _len_field(0x2A, _block_id_bytes(header.last_block_id)),
            _bytes_field(0x32, header.last_commit_hash),
            _bytes_field(0x3A, header.data_hash),
            _bytes_field(0x42, header.validators_hash),
            _bytes_field(0x4A, header.next_validators_hash),
            _bytes_field(0x52, header.consensus_hash),
            _bytes_field(0x5A, header.app_hash),
            _bytes_field(0x62, header.last_results_hash),
            _bytes_field(0x6A, header.evidence_hash),
            _bytes_field(0x72, header.proposer_address),
        )
    )


def block_id_for(header: types_pb2.Header) -> types_pb2.BlockID:
    """BlockID for a block of the embedded engine, which never gossips block parts.

    hash = header_hash(header), as in CometBFT. The part set is one part whose bytes are the
    gogoproto encoding of the header (``encode_header``), so part_set_header = {total: 1, hash:
    leaf_hash(those bytes)}, the Merkle root CometBFT computes over a one-part set. The header alone
    suffices: it binds the transactions, evidence and last commit through data_hash, evidence_hash and
    last_commit_hash, and it is deterministic. It is not the hash CometBFT would give the full Block
    (that needs the Block's own encoding); nothing in light-client verification depends on it.
    """
    return types_pb2.BlockID(
        hash=header_hash(header),
        part_set_header=types_pb2.PartSetHeader(total=1, hash=leaf_hash(encode_header(header))),
    )


# --- validator sets ---------------------------------------------------------------------------------


def _public_key_bytes(pub_key) -> bytes:
    kind = pub_key.WhichOneof("sum")
    if kind == "ed25519":
        return _len_field(0x0A, pub_key.ed25519)
    if kind == "secp256k1":
        return _len_field(0x12, pub_key.secp256k1)
    raise LightVerificationError("validator without a public key")


def simple_validator_bytes(validator: validator_pb2.Validator) -> bytes:
    """types/validator.go Bytes: SimpleValidator{pub_key, voting_power}, the validator-set leaf."""
    out = _len_field(0x0A, _public_key_bytes(validator.pub_key))
    power = validator.voting_power
    return out + (b"\x10" + _varint64(power) if power else b"")


def validator_set_hash(validators: Sequence[validator_pb2.Validator]) -> bytes:
    """ValidatorSet.Hash over the validators in the given order (CometBFT sorts by power, address)."""
    return MerkleTree.from_items([simple_validator_bytes(v) for v in validators]).root


# --- votes and commits ------------------------------------------------------------------------------


def _canonical_block_id(block_id: types_pb2.BlockID | None) -> bytes:
    """Field 4 of CanonicalVote, or nothing for a zero BlockID (a nil vote)."""
    if block_id is None:
        return b""
    psh = block_id.part_set_header
    if not block_id.hash and not psh.total and not psh.hash:
        return b""
    return _len_field(0x22, _block_id_bytes(block_id))


def _vote_parts(
    chain_id: str, height: int, round: int, block_id: types_pb2.BlockID | None, msg_type: int
) -> tuple[bytes, bytes]:
    """The CanonicalVote bytes before and after the timestamp, which is all that differs per signer."""
    head = b"\x08" + uvarint(msg_type) if msg_type else b""
    if height:
        head += b"\x11" + struct.pack("<q", height)
    if round:
        head += b"\x19" + struct.pack("<q", round)
    head += _canonical_block_id(block_id) + b"\x2a"
    tail = _bytes_field(0x32, chain_id.encode())
    return head, tail


def _sign_bytes(head: bytes, ts: bytes, tail: bytes) -> bytes:
    body = head + uvarint(len(ts)) + ts + tail
    return uvarint(len(body)) + body


def vote_sign_bytes(
    chain_id: str,
    height: int,
    round: int,
    block_id: types_pb2.BlockID | None,
    timestamp: timestamp_pb2.Timestamp | None,
    msg_type: int = PRECOMMIT,
) -> bytes:
    """VoteSignBytes: uvarint length ‖ CanonicalVote (height, round as sfixed64; timestamp always
    written; block_id left out when zero). ``timestamp=None`` is Go's zero time."""
    head, tail = _vote_parts(chain_id, height, round, block_id, msg_type)
    return _sign_bytes(head, _ts_bytes(timestamp), tail)


_verify_keys: dict[bytes, VerifyKey] = {}


def _verify_key(public_key: bytes) -> VerifyKey:
    key = _verify_keys.get(public_key)
    if key is None:
        if len(_verify_keys) > 4096:
            _verify_keys.clear()
        key = _verify_keys[public_key] = VerifyKey(public_key)
    return key


class _LRU:
    """A small thread-safe LRU of verified headers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple, CommitCheck] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> CommitCheck | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: CommitCheck) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_verified = _LRU(1024)


def clear_verification_cache() -> None:
    _verified.clear()


def verify_commit(
    chain_id: str,
    signed_header: types_pb2.SignedHeader,
    validator_set: validator_pb2.ValidatorSet,
    *,
    use_cache: bool = True,
) -> CommitCheck:
    """VerifyCommitLight for header H with the validator set of H, plus the SignedHeader checks.

    Unlike Go's light variant, which stops once 2/3 is reached, every COMMIT signature is verified,
    so one bad signature fails the commit. Nil and absent votes are neither verified nor counted.
    Successes are cached by (chain id, height, header hash, serialized validator set), so a hit
    means this very header was verified with this very set before.
    """
    header = signed_header.header
    commit = signed_header.commit
    if not signed_header.HasField("header") or not signed_header.HasField("commit"):
        raise LightVerificationError("signed header lacks its header or commit")
    if header.chain_id != chain_id:
        raise LightVerificationError(f"header is for chain {header.chain_id!r}, expected {chain_id!r}")
    block_hash = header_hash(header)
    # The set is part of the key so that a hit still means "this header, signed by this set".
    cache_key = (chain_id, header.height, block_hash, validator_set.SerializeToString())
    if use_cache:
        hit = _verified.get(cache_key)
        if hit is not None:
            return hit

    height = header.height
    if height <= 0:
        raise LightVerificationError(f"header height {height} is not positive")
    if commit.height != height:
        raise LightVerificationError(f"commit is for height {commit.height}, header for {height}")
    if commit.round < 0:
        raise LightVerificationError("negative commit round")
    block_id = commit.block_id
    if block_id.hash != block_hash:
        raise LightVerificationError(
            f"commit signs block {block_id.hash.hex().upper()}, header hashes to {block_hash.hex().upper()}"
        )
    validators = validator_set.validators
    if not validators:
        raise LightVerificationError("empty validator set")
    if validator_set_hash(validators) != header.validators_hash:
        raise LightVerificationError("validator set does not match header.validators_hash")
    signatures = commit.signatures
    if len(signatures) != len(validators):
        raise LightVerificationError(
            f"commit has {len(signatures)} signatures for {len(validators)} validators"
        )

    total_power = 0
    for val in validators:
        if val.voting_power < 0:
            raise LightVerificationError("negative voting power")
        total_power += val.voting_power
    if total_power <= 0:
        raise LightVerificationError("validator set has no voting power")

    head, tail = _vote_parts(chain_id, height, commit.round, block_id, PRECOMMIT)
    signed_power = signers = 0
    for idx, sig in enumerate(signatures):
        flag = sig.block_id_flag
        if flag == FLAG_ABSENT:
            if sig.validator_address or sig.signature:
                raise LightVerificationError(f"absent signature #{idx} carries an address or signature")
            continue
        if flag not in (FLAG_COMMIT, FLAG_NIL):
            raise LightVerificationError(f"signature #{idx} has unknown block_id_flag {flag}")
        if len(sig.validator_address) != ADDRESS_SIZE:
            raise LightVerificationError(f"signature #{idx} has a malformed validator address")
        if not sig.signature or len(sig.signature) > MAX_SIGNATURE_SIZE:
            raise LightVerificationError(f"signature #{idx} is missing or too long")
        if flag == FLAG_NIL:
            continue  # a vote for nil: it does not count towards this block
        val = validators[idx]
        if val.address != sig.validator_address:
            raise LightVerificationError(
                f"validator address mismatch at index {idx}: expected {val.address.hex().upper()}, "
                f"got {sig.validator_address.hex().upper()}"
            )
        if val.pub_key.WhichOneof("sum") != "ed25519":
            raise LightVerificationError(f"validator #{idx} has no Ed25519 key (only Ed25519 is supported)")
        public_key = val.pub_key.ed25519
        if len(public_key) != 32 or _sha256(public_key).digest()[:ADDRESS_SIZE] != val.address:
            raise LightVerificationError(f"validator #{idx} address is not derived from its public key")
        message = _sign_bytes(head, _ts_bytes(sig.timestamp, sig.HasField("timestamp")), tail)
        try:
            _verify_key(public_key).verify(message, sig.signature)
        except (CryptoError, ValueError):
            raise LightVerificationError(f"wrong signature #{idx}") from None
        signed_power += val.voting_power
        signers += 1

    needed = total_power * 2 // 3
    if signed_power <= needed:
        raise LightVerificationError(f"signed voting power {signed_power} is not more than 2/3 of {total_power}")
    result = CommitCheck(height, signed_power, total_power, signers, block_hash)
    if use_cache:
        _verified.put(cache_key, result)
    return result


def sign_commit(
    chain_id: str,
    header: types_pb2.Header,
    block_id: types_pb2.BlockID,
    validator: tuple[SigningKey, bytes],
    timestamp: timestamp_pb2.Timestamp,
) -> types_pb2.Commit:
    """A round-0 commit with the one precommit of a single-validator chain.

    CometBFT's BFT-time rule (state/validation.go) wants block H+1's time to equal the median of
    this commit's timestamps, i.e. this ``timestamp`` for one validator, and each header time to be
    after the previous one; so the timestamp should be after header.time (CometBFT votes at
    max(now, header.time + 1 ms)). Light clients do not check that.
    """
    signing_key, address = validator
    if _sha256(bytes(signing_key.verify_key)).digest()[:ADDRESS_SIZE] != address:
        raise ValueError("validator address is not derived from the signing key")
    if block_id.hash != header_hash(header):
        raise ValueError("block_id.hash is not this header's hash")
    message = vote_sign_bytes(chain_id, header.height, 0, block_id, timestamp)
    signature = signing_key.sign(message).signature
    return types_pb2.Commit(
        height=header.height,
        round=0,
        block_id=block_id,
        signatures=[
            types_pb2.CommitSig(
                block_id_flag=FLAG_COMMIT,
                validator_address=address,
                timestamp=timestamp,
                signature=signature,
            )
        ],
    )


def verify_query(
    chain_id: str,
    value_ops: Sequence[ProofOpLike],
    keypath: Sequence[bytes],
    value: bytes | None,
    signed_header_next: types_pb2.SignedHeader,
    validator_set: validator_pb2.ValidatorSet,
    *,
    query_height: int | None = None,
) -> CommitCheck:
    """A query answered at height H: header H+1 (which carries H's app hash) is verified, then the
    value's proof (``value`` None: the key's absence proof) runs against its app_hash. Raises
    LightVerificationError or merkle.ProofError."""
    check = verify_commit(chain_id, signed_header_next, validator_set)
    header = signed_header_next.header
    if query_height is not None and header.height != query_height + 1:
        raise LightVerificationError(
            f"a query at height {query_height} needs header {query_height + 1}, got {header.height}"
        )
    verify_store_proof(value_ops, header.app_hash, keypath, value)
    return check


def header_unix_s(header: types_pb2.Header) -> float:
    """The header's BFT time (the median of the previous commit's votes) as Unix seconds."""
    return header.time.seconds + header.time.nanos / 1e9
