"""The id of the request being served, carried in a context variable across awaits."""

from __future__ import annotations

import contextvars
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shelfproof.runtime.tls import Identity

REQUEST_ID_METADATA_KEY = "x-request-id"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def bind_request_id(request_id: str) -> contextvars.Token:
    return _request_id.set(request_id)


def unbind_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


# The caller's identity, from its certificate (runtime/identity.py); None when the server runs without TLS.
_caller: contextvars.ContextVar["Identity | None"] = contextvars.ContextVar("caller", default=None)


def current_caller() -> "Identity | None":
    return _caller.get()


def bind_caller(caller: "Identity") -> contextvars.Token:
    return _caller.set(caller)
