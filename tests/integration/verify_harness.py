"""The verification service over the registry's real stack (embedded ledger, adapter, PostgreSQL,
registry gRPC services), served by aiohttp on loopback."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shelfproof.ledger.client import LedgerClient
from shelfproof.ledger.genesis import CONSORTIUM_GLN, DEMO_BRAND_GLN, DEMO_BRAND_PREFIX, build_genesis
from shelfproof.ledger.v1 import ledger_pb2 as lpb
from shelfproof.ledger.v1 import ledger_pb2_grpc
from shelfproof.ledger.v1 import state_pb2 as st
from shelfproof.verify.ratelimit import RateLimiter
from shelfproof.verify.service import LedgerReader, QueryModel, ScanRecorder, Verifier
from shelfproof.verify.trust import TrustRoot, validators_hash_of_file
from shelfproof.verify.verdict import CloneRules
from shelfproof.verify.web import build_app
from tests.integration.harness import CHAIN, RESOLVER, Registry


class VerifyStack(Registry):
    def __init__(self, tmp_path, dsn: str, *, rate_per_s: float = 50.0, burst: int = 50, rules: CloneRules = CloneRules()) -> None:
        super().__init__(tmp_path, dsn)
        # The consortium's verifier agent records scans (only it holds scan::record).
        self.genesis = build_genesis(
            CHAIN, [(CONSORTIUM_GLN, "consortium"), (DEMO_BRAND_GLN, "brand", [DEMO_BRAND_PREFIX])], consortium_gln=CONSORTIUM_GLN
        )
        self.rate_per_s, self.burst, self.rules = rate_per_s, burst, rules

    async def __aenter__(self):
        await super().__aenter__()
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.ledger_channel)
        self.trusted = {validators_hash_of_file(self.tmp_path / "engine" / "priv_validator_key.json")}
        # What `shelfproof verify` pins: the chain id and validator set from local files, not the server.
        self.trust = TrustRoot(CHAIN, frozenset(self.trusted))
        scanner = self.genesis.accounts[f"{CONSORTIUM_GLN}/verifier-0"].signer(CHAIN)
        self.scans = ScanRecorder(LedgerClient(self.ledger, scanner), flush_interval_s=3600)  # tests flush
        self.verifier = Verifier(QueryModel(self.pool), LedgerReader(self.ledger, CHAIN, self.trusted), self.scans, self.rules)
        app = build_app(self.verifier, RateLimiter(self.rate_per_s, self.burst), RESOLVER)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()
        await super().__aexit__(*exc)

    def local(self, uri: str) -> str:
        """A label's URI pointed at this test server."""
        assert uri.startswith(RESOLVER)
        return self.base_url + uri[len(RESOLVER):]

    async def provable(self, height: int, timeout_s: float = 10) -> None:
        """Wait until state at ``height`` can be proven (header ``height + 1`` is committed)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (await self.ledger.GetLedgerStatus(lpb.GetLedgerStatusRequest(), timeout=5)).latest_height < height + 1:
            assert asyncio.get_running_loop().time() < deadline, f"height {height} is not provable yet"
            await asyncio.sleep(0.02)

    async def scans_on_ledger(self, gtin: str, serial: str, at_least: int, timeout_s: float = 15) -> st.ScanRecord:
        """Flush buffered scans and wait until a provable height shows ``at_least`` of them."""
        await self.scans.flush()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            reply = await self.ledger.Query(lpb.QueryRequest(store="scans", key=f"{gtin}/{serial}".encode(), prove=True), timeout=10)
            record = st.ScanRecord.FromString(reply.value)
            if record.scans >= at_least:
                return record
            assert asyncio.get_running_loop().time() < deadline, f"only {record.scans} scans on the ledger"
            await asyncio.sleep(0.05)
