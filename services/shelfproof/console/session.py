"""What every console page shares: the clients (one per console process), the logged-in person and
their unlocked key (in ``st.session_state`` only), and errors shown as sentences."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import grpc
import streamlit as st

from shelfproof.console.clients import Addresses, Clients
from shelfproof.console.errors import problem_of
from shelfproof.console.people import PEOPLE, Person
from shelfproof.runtime.errors import DomainError

PERSON, KEY = "person_login", "signing_key"


def addresses() -> Addresses:
    env = os.environ.get
    return Addresses(
        ledger=env("SHELFPROOF_CONSOLE_LEDGER_ADDRESS", "127.0.0.1:50051"),
        registry=env("SHELFPROOF_CONSOLE_REGISTRY_ADDRESS", "127.0.0.1:50052"),
        planner=env("SHELFPROOF_CONSOLE_PLANNER_ADDRESS", "127.0.0.1:50053"),
        pricing=env("SHELFPROOF_CONSOLE_PRICING_ADDRESS", "127.0.0.1:50054"),
    )


@st.cache_resource
def _clients(where: Addresses) -> Clients:
    from shelfproof.runtime.settings import TlsSettings

    return Clients(where, tls=TlsSettings())  # the console's certificate, set by `shelfproof up`


def clients() -> Clients:
    return _clients(addresses())


def state_dir() -> Path:
    return Path(os.environ.get("SHELFPROOF_STATE_DIR", ".local")).resolve()


def person() -> Person | None:
    login = st.session_state.get(PERSON)
    return PEOPLE.get(login) if login else None


def log_out() -> None:
    for name in (PERSON, KEY):
        st.session_state.pop(name, None)


@contextlib.contextmanager
def explained(doing: str):
    """Show a failure inside the block as a sentence (never a trace)."""
    try:
        yield
    except (grpc.RpcError, DomainError, LookupError, ValueError) as err:
        st.error(f"Could not {doing}: {problem_of(err).sentence()}")


def gln_names() -> dict[str, str]:
    try:
        return {loc.gln: loc.name for loc in clients().locations()}
    except grpc.RpcError:
        return {}
