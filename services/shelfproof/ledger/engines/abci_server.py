"""CometBFT's ABCI socket transport for ``LedgerApplication`` (v0.38 wire, asyncio).

Framing: each message is ``uvarint(length) ‖ protobuf``; CometBFT writes ``Request``, we answer
``Response`` in request order on each of its four connections (query, snapshot, mempool,
consensus). Answers to the requests of one read are written together; a Flush waits for them to
drain. One event loop serialises all connections, as CometBFT's own Go server does with a mutex.

A handler that raises is answered with ``ResponseException`` for that request (the ABCI answer for
an application error) and the connection keeps serving. CometBFT stops on that answer, which is right
for the one deliberate raise, a FinalizeBlock for the wrong height; the application answers every
transaction in-band, so no transaction can get here. Only a broken frame (a length
beyond the limit) closes that connection, since nothing after it can be read; the process lives on.

Run one process per validator: ``python -m shelfproof.ledger.engines.abci_server`` (settings below).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict
from tendermint.abci import types_pb2 as abci

from shelfproof.ledger.core.app import LedgerApplication
from shelfproof.ledger.core.state import RETAINED_VERSIONS
from shelfproof.ledger.storage import StateDB
from shelfproof.ledger.proofs.merkle import uvarint
from shelfproof.runtime.log import configure_logging
from shelfproof.runtime.server import run_until_signalled
from shelfproof.runtime.settings import CommonSettings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
READ_BYTES = 1024 * 1024


class AbciSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_ABCI_", extra="ignore")

    # Folder of this node's application state (state.db).
    home: Path
    host: str = "127.0.0.1"
    port: int = 26658
    # Heights whose state stays provable (older versions are pruned from the state file).
    retain_versions: int = RETAINED_VERSIONS
    # Take a state-sync snapshot every this many heights (0: never), keeping the newest few.
    snapshot_interval: int = 0
    snapshot_keep: int = 2


def _frame_at(buffer: bytearray, at: int) -> tuple[int, int] | None:
    """(start, end) of the frame whose length prefix begins at ``at``, or None while it is incomplete.
    ValueError for a prefix no frame may have (overlong, or a length past MAX_MESSAGE_BYTES)."""
    length = shift = 0
    while True:
        if at >= len(buffer):
            return None
        byte = buffer[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    if length > MAX_MESSAGE_BYTES:
        raise ValueError(f"a frame of {length} bytes")
    return (at, at + length) if at + length <= len(buffer) else None


class AbciSocketServer:
    def __init__(self, app: LedgerApplication, host: str, port: int) -> None:
        self.app = app
        self.host, self.port = host, port
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()

    def _answer(self, request: abci.Request) -> abci.Response:
        kind = request.WhichOneof("value")
        app = self.app
        if kind == "check_tx":
            return abci.Response(check_tx=app.check_tx(request.check_tx))
        if kind == "finalize_block":
            return abci.Response(finalize_block=app.finalize_block(request.finalize_block))
        if kind == "commit":
            return abci.Response(commit=app.commit())
        if kind == "prepare_proposal":
            return abci.Response(prepare_proposal=app.prepare_proposal(request.prepare_proposal))
        if kind == "process_proposal":
            return abci.Response(process_proposal=app.process_proposal(request.process_proposal))
        if kind == "query":
            return abci.Response(query=app.query(request.query))
        if kind == "info":
            return abci.Response(info=app.info(request.info))
        if kind == "init_chain":
            return abci.Response(init_chain=app.init_chain(request.init_chain))
        if kind == "echo":
            return abci.Response(echo=abci.ResponseEcho(message=request.echo.message))
        if kind == "flush":
            return abci.Response(flush=abci.ResponseFlush())
        if kind == "list_snapshots":
            return abci.Response(list_snapshots=app.list_snapshots(request.list_snapshots))
        if kind == "offer_snapshot":
            return abci.Response(offer_snapshot=app.offer_snapshot(request.offer_snapshot))
        if kind == "load_snapshot_chunk":
            return abci.Response(load_snapshot_chunk=app.load_snapshot_chunk(request.load_snapshot_chunk))
        if kind == "apply_snapshot_chunk":
            return abci.Response(apply_snapshot_chunk=app.apply_snapshot_chunk(request.apply_snapshot_chunk))
        if kind == "extend_vote":
            return abci.Response(extend_vote=abci.ResponseExtendVote())
        if kind == "verify_vote_extension":
            return abci.Response(
                verify_vote_extension=abci.ResponseVerifyVoteExtension(status=abci.ResponseVerifyVoteExtension.ACCEPT)
            )
        raise ValueError(f"unsupported ABCI request {kind}")

    def _answer_or_exception(self, frame: bytes) -> tuple[abci.Response, bool]:
        """The response to one framed request, and whether it was a Flush."""
        request = abci.Request()
        try:
            request.ParseFromString(frame)
            return self._answer(request), request.WhichOneof("value") == "flush"
        except Exception as err:  # noqa: BLE001 - one failed request, not the end of the connection
            kind = request.WhichOneof("value") or "undecodable request"
            log.exception("ABCI %s failed; answering an exception", kind)
            return abci.Response(exception=abci.ResponseException(error=f"{kind}: {type(err).__name__}: {err}")), False

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Frames are cut from what one read returned (under load, a read holds many CheckTx), and their
        answers leave in one write per read or per Flush: a write per answer was a tenth of the
        application's CPU with four validators."""
        peer = writer.get_extra_info("peername")
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(READ_BYTES)
                if not data:
                    return  # CometBFT closed the connection (it is stopping)
                buffer += data
                answers, at, flushed = [], 0, False
                while True:
                    try:
                        frame = _frame_at(buffer, at)
                    except ValueError as err:
                        log.error("ABCI connection from %s sent a broken frame (%s); closing it", peer, err)
                        return
                    if frame is None:
                        break
                    response, flush = self._answer_or_exception(bytes(buffer[frame[0]:frame[1]]))
                    payload = response.SerializeToString()
                    answers += (uvarint(len(payload)), payload)
                    at = frame[1]
                    flushed |= flush
                del buffer[:at]
                if answers:
                    writer.write(b"".join(answers))
                if flushed:
                    await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port, limit=MAX_MESSAGE_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "ABCI application listening",
            extra={"address": f"tcp://{self.host}:{self.port}", "height": self.app.height},
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def main() -> None:
    common = CommonSettings()
    configure_logging(common.log_level, common.log_format)
    settings = AbciSettings()
    app = LedgerApplication(
        StateDB(settings.home / "state.db"),
        retain=settings.retain_versions,
        snapshot_interval=settings.snapshot_interval,
        snapshot_keep=settings.snapshot_keep,
    )
    server = AbciSocketServer(app, settings.host, settings.port)
    asyncio.run(run_until_signalled(server.start, server.stop))


if __name__ == "__main__":
    main()
