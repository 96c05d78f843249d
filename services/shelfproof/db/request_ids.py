"""Idempotent writes by ``request_id`` (AIP-155), one table (``request_ids``) for every service: what an
earlier call with the same id wrote, and the record of a new write."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from shelfproof.runtime.errors import FieldViolation, InvalidArgument

MAX_REQUEST_ID = 128


async def earlier_write(pool: AsyncConnectionPool, request_id: str, method: str) -> tuple[str, bytes] | None:
    """(resource, transaction hash) an earlier ``method`` call with this request id wrote, or None; the id
    used for another method is INVALID_ARGUMENT."""
    if not request_id:
        return None
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument(
            f"request_id is longer than {MAX_REQUEST_ID}", field_violations=[FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters")]
        )
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT method, resource, tx_hash FROM request_ids WHERE request_id = %s", (request_id,))
        ).fetchone()
    if row and row[0] != method:
        raise InvalidArgument(f"request_id was used for {row[0]}", field_violations=[FieldViolation("request_id", "reused for another method")])
    return (row[1], bytes(row[2])) if row else None


async def remember_write(pool: AsyncConnectionPool, request_id: str, method: str, resource: str, tx_hash: bytes) -> None:
    if request_id:
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO request_ids VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", (request_id, method, resource, tx_hash)
            )
