"""The planner's real language model on a local Ray Serve, started once per test session.

tests/integration/conftest.py makes it available to every integration test.
Starting takes about two minutes on two CPU cores (vLLM's three processes each import vLLM); the model
is converted into ``.local/models`` beforehand, by `make deps` (`shelfproof planner prepare`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from shelfproof.planner.llm import LLMConfig, LocalLLM, start_local_llm, stop_local_llm


@pytest.fixture(scope="session")
def planner_llm() -> Iterator[LocalLLM]:
    """``LLMServer`` + ``OpenAIIngress`` on a Ray of their own (loopback only). Ray's temp dir is a short
    path of its own: its socket paths must stay under the 107-byte limit of Unix socket names."""
    state_dir = Path(tempfile.mkdtemp(prefix="sp-ray-"))
    try:
        local = start_local_llm(LLMConfig(), state_dir=state_dir, object_store_mb=100)
        try:
            yield local
        finally:
            stop_local_llm()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
