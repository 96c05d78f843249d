"""Result codes the ledger answers in-band in CheckTx and FinalizeBlock (0 = accepted)."""

from __future__ import annotations

import enum


class ResultCode(enum.IntEnum):
    OK = 0
    MALFORMED = 1
    TX_TOO_LARGE = 2
    UNKNOWN_SIGNER = 3
    UNKNOWN_KEY = 4
    KEY_REVOKED = 5
    BAD_SIGNATURE = 6
    NONCE_REPLAYED = 7
    NONCE_GAP = 8
    PERMISSION_DENIED = 9
    INVALID_ARGUMENT = 10
    NOT_FOUND = 11
    ALREADY_EXISTS = 12
    GUARDRAIL_VIOLATED = 13
    FAILED_PRECONDITION = 14
    # A transaction reached a bug (an exception other than TxRejected): answered in-band on every
    # node with its writes discarded. Numbered apart so that new rule codes never collide with it.
    INTERNAL_ERROR = 100


class TxRejected(Exception):
    """Raised by the state machine; answered as a non-zero code, never as an ABCI exception."""

    def __init__(self, code: ResultCode, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log
