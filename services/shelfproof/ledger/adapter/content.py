"""The content-addressed store for bulky payloads (a batch's serial list, an AI draft's prompt, input
snapshot and output). The ledger commits only their SHA-256; anyone holding the bytes can check them.

Files live under ``<root>/<first two hex>/<sha256 hex>``, written to a temporary name and renamed, so
a reader never sees a partial payload; every read re-hashes what it returns.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

MAX_CONTENT_BYTES = 256 * 1024 * 1024


class ContentError(Exception):
    pass


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: bytes) -> Path:
        hex_digest = digest.hex()
        return self.root / hex_digest[:2] / hex_digest

    def put(self, content: bytes) -> bytes:
        """Store ``content`` (idempotent) and return its SHA-256."""
        if len(content) > MAX_CONTENT_BYTES:
            raise ContentError(f"content of {len(content)} bytes exceeds {MAX_CONTENT_BYTES}")
        digest = hashlib.sha256(content).digest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: bytes) -> bytes | None:
        """The content with this SHA-256, or None; corrupt files are reported, never returned."""
        if len(digest) != 32:
            raise ContentError("a content hash is 32 bytes (SHA-256)")
        try:
            content = self._path(digest).read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(content).digest() != digest:
            raise ContentError(f"stored content {digest.hex()} is corrupt")
        return content

    def __contains__(self, digest: bytes) -> bool:
        return self._path(digest).exists()
