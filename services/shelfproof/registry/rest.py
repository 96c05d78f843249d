"""The EPCIS 2.0 REST binding (GS1 ``openapi.yaml``) for trading partners whose systems speak only it:
``GET /events`` with the standard query parameters, the top-level resources (``/epcs/{epc}/events``,
``/bizLocations/{gln}/events``, ``/eventTypes/{type}/events`` ...), answers as ``EPCISQueryDocument``
paged by ``nextPageToken`` with a ``Link: <...>; rel="next"`` header, errors as RFC 7807 problems with
the binding's ``epcisException:*`` types, and ``POST /capture`` as a capture job (202 + Location) whose
state ``GET /capture/{id}`` answers.

It runs inside the registry process, on a port of its own beside the gRPC server: a capture is the
gRPC capture path itself (``plan_capture`` then ``EventService.record``: the same checks, hashes, the
one ledger signer whose nonces must stay in sequence, the same projection wait), and queries read the
same query model. HTTP/1.1 JSON on its own port so it can be exposed to partners apart from gRPC.

Queries are SQL over ``events`` and ``event_epcs`` (identifiers canonical, so an EPC URN, a Digital
Link on any host and an EPC pattern all compare alike). Paging is keyset: the token holds the last
row's sort key and a digest of the query it belongs to, so pages never overlap or skip, even while
events are being captured.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson
import psycopg
import psycopg_pool
from aiohttp import web
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from shelfproof.gs1 import epcis
from shelfproof.gs1.canonical import MAX_KEY_URI, canonical_key, check_digit
from shelfproof.registry.events import MAX_DOCUMENT_BYTES, MAX_EVENTS, EventService, export_document, party_scope, plan_capture
from shelfproof.runtime.identity import reader_organization
from shelfproof.runtime.errors import DomainError, InvalidArgument, PermissionDenied

log = logging.getLogger(__name__)

EPCIS_VERSION = "2.0.0"
DEFAULT_PER_PAGE = 30  # the binding's default
MAX_PER_PAGE = 1_000
MAX_VALUES = 100  # values of one list parameter
MAX_URL = 2_000  # the binding's 414 threshold
EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")
CAPTURE_JOB_WAIT_S = 600.0

QUERY_PARAMETER = "epcisException:QueryParameterException"
VALIDATION = "epcisException:ValidationException"
NO_SUCH_NAME = "epcisException:NoSuchNameException"
QUERY_TOO_LARGE = "epcisException:QueryTooLargeException"
QUERY_TOO_COMPLEX = "epcisException:QueryTooComplexException"
CAPTURE_LIMIT = "epcisException:CaptureLimitExceededException"
SECURITY = "epcisException:SecurityException"
IMPLEMENTATION = "epcisException:ImplementationException"
_TITLES = {
    QUERY_PARAMETER: "Invalid query parameter", VALIDATION: "Invalid EPCIS document", NO_SUCH_NAME: "Not found",
    QUERY_TOO_LARGE: "Query result too large", QUERY_TOO_COMPLEX: "Query too complex",
    CAPTURE_LIMIT: "Capture payload too large", SECURITY: "Not allowed", IMPLEMENTATION: "Repository error",
}


class EpcisProblem(Exception):
    """An answer in the binding's RFC 7807 shape: ``type`` an ``epcisException:*`` name."""

    def __init__(self, status: int, type_: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.type, self.detail, self.headers = status, type_, detail, headers or {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body = {"type": self.type, "title": _TITLES.get(self.type, "Error"), "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        return body


def _bad(detail: str) -> EpcisProblem:
    return EpcisProblem(400, QUERY_PARAMETER, detail)


def problem_of(error: DomainError) -> EpcisProblem:
    """A capture's domain error as the binding words it."""
    detail = error.message
    if error.field_violations:
        detail += " [" + "; ".join(f"{v.field}: {v.description}" for v in error.field_violations[:20]) + "]"
    if isinstance(error, InvalidArgument):
        return EpcisProblem(400, VALIDATION, detail)
    if isinstance(error, PermissionDenied):
        return EpcisProblem(403, SECURITY, detail)
    return EpcisProblem(500 if error.code.name == "INTERNAL" else 503, IMPLEMENTATION, detail)


# ----------------------------------------------------------------------------------------------- query parsing

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _time(name: str, text: str) -> datetime:
    # An unescaped '+' in a query string arrives as a space: read "...00 01:00" as "...00+01:00".
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    moment = epcis.parse_event_time(text) if _RFC3339.fullmatch(text) else None
    if moment is None:
        raise _bad(f"{name}: {text[:64]!r} is not an RFC 3339 date-time with an offset (e.g. 2026-11-20T08:00:00.000%2B01:00)")
    return moment


def _cbv_forms(name: str, value: str, words: frozenset[str], vocabulary: str, urn: str) -> list[str]:
    """Every spelling a stored event may use for a CBV value: bare word, web URI, EPCglobal URN."""
    word = value
    for prefix in (f"https://ref.gs1.org/cbv/{vocabulary}-", f"urn:epcglobal:cbv:{urn}:"):
        if value.startswith(prefix):
            word = value[len(prefix):]
    if word in words:
        return [word, f"https://ref.gs1.org/cbv/{vocabulary}-{word}", f"urn:epcglobal:cbv:{urn}:{word}"]
    if ":" not in value:
        raise _bad(f"{name}: {value[:80]!r} is not a CBV {vocabulary} word; custom values are URIs")
    return [value]


def _uri(name: str, value: str) -> str:
    if ":" not in value or any(c.isspace() for c in value):
        raise _bad(f"{name}: {value[:80]!r} is not a URI")
    return value


@dataclass
class EventQuery:
    """One SimpleEventQuery, parsed and checked: SQL conditions over ``events e`` and their values."""

    conditions: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    order_by: str = "record"  # "record" (ledger order = recordTime), or "eventTime"
    descending: bool = False
    event_count_limit: int | None = None
    max_event_count: int | None = None

    def where(self, sql: str, *values: Any) -> None:
        self.conditions.append(sql)
        self.values.extend(values)


def _match(q: EventQuery, name: str, values: list[str], fields: tuple[str, ...]) -> None:
    """MATCH_*: an identifier in `fields` equal to a value (canonical) or inside an EPC pattern."""
    exact, prefixes = [], []
    for value in values:
        if value.startswith("urn:epc:idpat:"):
            base = canonical_key(value)
            if base is None:
                raise _bad(f"{name}: {value[:80]!r} is not an EPC pattern this repository matches "
                           "(urn:epc:idpat:<scheme>:<company>.<reference>.*)")
            exact.append(base)
            prefixes.append(base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%")
        else:
            exact.append(canonical_key(_uri(name, value)) or value)
    # One index probe per value: equality, or a prefix range (collation C) for a pattern.
    matches = " OR ".join(["x.epc = ANY(%s)"] + ["x.epc LIKE %s"] * len(prefixes))
    q.where(f"e.event_hash IN (SELECT x.event_hash FROM event_epcs x WHERE x.field = ANY(%s) AND ({matches}))",
            list(fields), exact, *prefixes)


def _places(name: str, values: list[str]) -> list[str]:
    out = []
    for value in values:
        place = epcis.place_id({"id": _uri(name, value)})
        if place is None:
            raise _bad(f"{name}: {value[:80]!r} is not a location identifier")
        out.append(place)
    return out


_EPC_FIELDS = ("epcList", "childEPCs")
_ANY_EPC = ("epcList", "childEPCs", "parentID", "inputEPCList", "outputEPCList")
_CLASS_FIELDS = ("quantityList", "childQuantityList")
_ANY_CLASS = epcis.QUANTITY_FIELDS


def _disposition_forms(name: str, values: list[str]) -> list[str]:
    return [f for v in values for f in _cbv_forms(name, v, epcis.DISPOSITIONS, "Disp", "disp")]


# name -> what it adds to the query, from its (pipe-split) values
_LIST_PARAMETERS: dict[str, Callable[[EventQuery, str, list[str]], None]] = {
    "eventType": lambda q, n, v: q.where("e.event_type = ANY(%s)", v),
    "EQ_action": lambda q, n, v: q.where("e.action = ANY(%s)", [_action(n, a) for a in v]),
    "EQ_bizStep": lambda q, n, v: q.where(
        "e.biz_step = ANY(%s)", [f for s in v for f in _cbv_forms(n, s, epcis.BIZ_STEPS, "BizStep", "bizstep")]),
    "EQ_disposition": lambda q, n, v: q.where("e.disposition = ANY(%s)", _disposition_forms(n, v)),
    "EQ_persistentDisposition_set": lambda q, n, v: q.where(
        "e.document->'persistentDisposition'->'set' ?| %s", _disposition_forms(n, v)),
    "EQ_persistentDisposition_unset": lambda q, n, v: q.where(
        "e.document->'persistentDisposition'->'unset' ?| %s", _disposition_forms(n, v)),
    # No location hierarchy is held as master data, so a place has no descendants: WD_ is EQ_.
    "EQ_readPoint": lambda q, n, v: q.where("e.read_point = ANY(%s)", _places(n, v)),
    "WD_readPoint": lambda q, n, v: q.where("e.read_point = ANY(%s)", _places(n, v)),
    "EQ_bizLocation": lambda q, n, v: q.where("e.biz_location = ANY(%s)", _places(n, v)),
    "WD_bizLocation": lambda q, n, v: q.where("e.biz_location = ANY(%s)", _places(n, v)),
    "EQ_transformationID": lambda q, n, v: q.where("e.document->>'transformationID' = ANY(%s)", v),
    "MATCH_epc": lambda q, n, v: _match(q, n, v, _EPC_FIELDS),
    "MATCH_parentID": lambda q, n, v: _match(q, n, v, ("parentID",)),
    "MATCH_inputEPC": lambda q, n, v: _match(q, n, v, ("inputEPCList",)),
    "MATCH_outputEPC": lambda q, n, v: _match(q, n, v, ("outputEPCList",)),
    "MATCH_anyEPC": lambda q, n, v: _match(q, n, v, _ANY_EPC),
    "MATCH_epcClass": lambda q, n, v: _match(q, n, v, _CLASS_FIELDS),
    "MATCH_inputEPCClass": lambda q, n, v: _match(q, n, v, ("inputQuantityList",)),
    "MATCH_outputEPCClass": lambda q, n, v: _match(q, n, v, ("outputQuantityList",)),
    "MATCH_anyEPCClass": lambda q, n, v: _match(q, n, v, _ANY_CLASS),
    # An event without an eventID is named by its Event Hash ID (what this repository answers as its eventID).
    "EQ_eventID": lambda q, n, v: q.where("(e.event_id = ANY(%s) OR e.event_hash = ANY(%s))", v, v),
    "EQ_errorReason": lambda q, n, v: q.where(
        "e.error_declaration->>'reason' = ANY(%s)",
        [f for r in v for f in _cbv_forms(n, r, frozenset(("did_not_occur", "incorrect_data")), "ER", "er")]),
    "EQ_correctiveEventID": lambda q, n, v: q.where(
        "e.event_hash IN (SELECT c.event_hash FROM event_corrections c WHERE c.corrective_event_id = ANY(%s))", v),
}
_TIME_PARAMETERS = {
    "GE_eventTime": "e.event_time >= %s", "LT_eventTime": "e.event_time < %s",
    "GE_recordTime": "e.record_time >= %s", "LT_recordTime": "e.record_time < %s",
}
_CONTROL_PARAMETERS = frozenset(("perPage", "nextPageToken", "orderBy", "orderDirection", "eventCountLimit",
                                 "maxEventCount", "EXISTS_errorDeclaration"))
# Standard parameters this repository does not evaluate: refused by name rather than ignored, since
# ignoring a filter would answer events the partner asked to exclude.
_NOT_SUPPORTED = frozenset((
    "EQ_quantity", "GT_quantity", "GE_quantity", "LT_quantity", "LE_quantity", "GE_errorDeclarationTime",
    "LT_errorDeclarationTime", "GE_startTime", "LT_startTime", "GE_endTime", "LT_endTime", "EQ_type", "EQ_deviceID",
    "EQ_dataProcessingMethod", "EQ_microorganism", "EQ_chemicalSubstance", "EQ_bizRules", "EQ_stringValue",
    "EQ_hexBinaryValue", "EQ_uriValue", "EQ_booleanValue",
))
_NOT_SUPPORTED_PREFIXES = ("EQ_INNER_", "EQ_ILMD_", "EXISTS_", "HASATTR_", "EQATTR_", "GT_", "GE_", "LT_", "LE_",
                           "EQ_", "MATCH_", "WD_", "EQ_value_", "EQ_minValue_", "EQ_maxValue_", "EQ_meanValue_")


def _action(name: str, value: str) -> str:
    if value not in epcis.ACTIONS:
        raise _bad(f"{name}: {value[:20]!r} is not ADD, OBSERVE or DELETE")
    return value


def _integer(name: str, text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or not low <= int(text) <= high:
        raise _bad(f"{name}: {text[:20]!r} must be a whole number from {low} to {high}")
    return int(text)


def parse_query(params: dict[str, str]) -> EventQuery:
    """The query a request's parameters ask for (``params``: each name once), or a 400 problem."""
    q = EventQuery()
    for name, raw in params.items():
        if "\x00" in raw or "\x00" in name:  # PostgreSQL text cannot hold it, and no identifier has it
            raise _bad(f"{name[:80]!r}: a value contains U+0000")
        if name in _LIST_PARAMETERS:
            values = raw.split("|")
            if not raw or len(values) > MAX_VALUES or any(not v or len(v) > MAX_KEY_URI for v in values):
                raise _bad(f"{name}: 1 to {MAX_VALUES} non-empty values, '|'-separated, each at most {MAX_KEY_URI} characters")
            _LIST_PARAMETERS[name](q, name, list(dict.fromkeys(values)))
        elif name in _TIME_PARAMETERS:
            q.where(_TIME_PARAMETERS[name], _time(name, raw))
        elif name in _CONTROL_PARAMETERS:
            continue
        elif name in _NOT_SUPPORTED or name.startswith(_NOT_SUPPORTED_PREFIXES):
            raise _bad(f"{name}: this repository does not evaluate this query parameter")
        else:
            raise _bad(f"{name[:80]!r} is not an EPCIS query parameter")
    if "EXISTS_errorDeclaration" in params:
        flag = params["EXISTS_errorDeclaration"]
        if flag not in ("true", "false", ""):
            raise _bad("EXISTS_errorDeclaration: true or false")
        if flag != "false":
            q.where("e.error_declaration IS NOT NULL")
    order_by = params.get("orderBy")
    if order_by is not None:
        if order_by not in ("eventTime", "recordTime"):
            raise _bad("orderBy: eventTime or recordTime (extension fields are not ordered by here)")
        q.order_by = "eventTime" if order_by == "eventTime" else "record"
        q.descending = params.get("orderDirection", "DESC") == "DESC"
    if params.get("orderDirection") not in (None, "ASC", "DESC"):
        raise _bad("orderDirection: ASC or DESC")
    if "orderDirection" in params and order_by is None:
        raise _bad("orderDirection needs orderBy")
    if "eventCountLimit" in params and "maxEventCount" in params:
        raise _bad("eventCountLimit and maxEventCount are mutually exclusive")
    if "eventCountLimit" in params:
        if order_by is None:
            raise _bad("eventCountLimit needs orderBy")
        q.event_count_limit = _integer("eventCountLimit", params["eventCountLimit"], 1, 10**9)
    if "maxEventCount" in params:
        q.max_event_count = _integer("maxEventCount", params["maxEventCount"], 1, 10**9)
    return q


# ----------------------------------------------------------------------------------------------- paging

def _query_digest(params: dict[str, str]) -> str:
    """What a page token is bound to: the query without its paging parameters."""
    fixed = sorted((k, v) for k, v in params.items() if k not in ("perPage", "nextPageToken"))
    return hashlib.sha256(json.dumps(fixed).encode()).hexdigest()[:24]


def _sort_key(q: EventQuery, row: dict) -> list:
    if q.order_by == "eventTime":
        return [row["event_time"].isoformat(), row["event_hash"]]
    return [row["ledger_height"], row["tx_index"], row["event_hash"]]


def _token(digest: str, key: list, served: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([digest, key, served]).encode()).decode().rstrip("=")


def _untoken(q: EventQuery, digest: str, token: str) -> tuple[list, int]:
    try:
        if len(token) > 600:
            raise ValueError
        their_digest, key, served = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if q.order_by == "eventTime":
            time_text, event_hash = key
            key = [datetime.fromisoformat(time_text), str(event_hash)]
        else:
            height, index, event_hash = key
            key = [int(height), int(index), str(event_hash)]
        if not isinstance(served, int) or served < 0:
            raise ValueError
    except (ValueError, TypeError, UnicodeError):
        raise _bad("nextPageToken: not a token this repository issued") from None
    if their_digest != digest:
        raise _bad("nextPageToken: belongs to a different query (repeat the query's parameters with it)")
    return key, served


# ----------------------------------------------------------------------------------------------- the service

def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None,
          content_type: str = "application/json") -> web.Response:
    try:
        data = orjson.dumps(body)
    except TypeError:  # a partner's integer beyond 64 bits: JSON allows it, orjson does not
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(body=data, status=status, content_type=content_type,
                        headers={"GS1-EPCIS-Version": EPCIS_VERSION, "GS1-CBV-Version": EPCIS_VERSION, **(headers or {})})


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def query_document(rows: list[dict]) -> dict:
    """An EPCISQueryDocument of stored events, each with its recordTime and an eventID."""
    document = export_document(rows)
    events = document["epcisBody"]["eventList"]
    for event, row in zip(events, rows, strict=True):
        if row.get("record_time") is not None:
            event["recordTime"] = _utc(row["record_time"])
        event.setdefault("eventID", row["event_hash"])
    document["type"] = "EPCISQueryDocument"
    document["epcisBody"] = {"queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": events}}}
    return document


class EpcisRestApi:
    """The binding's resources over the registry's pool and EventService."""

    def __init__(self, pool: AsyncConnectionPool, events: EventService, authorization=None) -> None:
        """``authorization`` (runtime/identity.py's CallerAuthorization, with TLS on): each request is decided as
        the gRPC RPC it stands for, on the caller's verified client certificate."""
        self.pool = pool
        self.events = events
        self.authorization = authorization
        self._jobs: set[asyncio.Task] = set()

    def app(self) -> web.Application:
        middlewares = [self._problems] + ([self._caller] if self.authorization is not None else [])
        app = web.Application(client_max_size=MAX_DOCUMENT_BYTES, middlewares=middlewares)
        add = app.router.add_get
        add("/healthz", self.healthz)
        add("/events", self.get_events)
        add("/events/{eventID:.+}", self.get_event)
        add("/eventTypes/{eventType}/events", self.events_of_type)
        add("/epcs/{epc:.+}/events", self.events_of_epc)
        add("/bizLocations/{bizLocation:.+}/events", self.events_at_location)
        add("/readPoints/{readPoint:.+}/events", self.events_at_read_point)
        add("/bizSteps/{bizStep:.+}/events", self.events_of_step)
        add("/dispositions/{disposition:.+}/events", self.events_of_disposition)
        app.router.add_post("/capture", self.post_capture)
        add("/capture/{captureID}", self.get_capture)
        app.on_shutdown.append(self._stop_jobs)
        return app

    @web.middleware
    async def _caller(self, request: web.Request, handler) -> web.StreamResponse:
        """Inside ``_problems``: a refusal is a problem document (401, 403 or 429 with Retry-After)."""
        from cryptography import x509

        from shelfproof.runtime.errors import Overloaded, Unauthenticated
        from shelfproof.runtime.request_context import bind_caller
        from shelfproof.runtime.tls import identity_of

        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        caller = identity_of(x509.load_der_x509_certificate(der)) if der else None
        if request.path == "/healthz":
            method = "/grpc.health.v1.Health/Check"
        elif request.method == "POST":
            method = "/shelfproof.product.v1.EventService/CaptureEvents"
        else:
            method = "/shelfproof.product.v1.EventService/ListEvents"
        try:
            if caller is None:
                raise Unauthenticated("no client certificate naming a shelfproof identity")
            bind_caller(self.authorization.admit_caller(method, caller))
        except Unauthenticated as error:
            raise EpcisProblem(401, SECURITY, error.message) from None
        except Overloaded as error:
            raise EpcisProblem(429, CAPTURE_LIMIT, error.message, {"Retry-After": str(max(1, round(error.retry_after_s or 1)))}) from None
        except PermissionDenied as error:
            raise EpcisProblem(403, SECURITY, error.message) from None
        return await handler(request)

    @web.middleware
    async def _problems(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            if len(str(request.rel_url)) > MAX_URL:
                raise EpcisProblem(414, QUERY_TOO_COMPLEX, f"the URL is longer than {MAX_URL} characters")
            return await handler(request)
        except EpcisProblem as problem:
            return _json(problem.body(request.path[:200]), problem.status, problem.headers, "application/problem+json")
        except web.HTTPException as http:
            if http.status < 400:
                raise
            type_ = NO_SUCH_NAME if http.status == 404 else QUERY_PARAMETER if http.status < 500 else IMPLEMENTATION
            if http.status == 413:
                type_ = CAPTURE_LIMIT
            return _json(EpcisProblem(http.status, type_, http.reason or "").body(request.path[:200]), http.status,
                         content_type="application/problem+json")
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
            log.warning("EPCIS REST request: the query model is unreachable", exc_info=True)
            problem = EpcisProblem(503, IMPLEMENTATION, "the query model is unavailable; try again shortly")
            return _json(problem.body(), 503, {"Retry-After": "5"}, "application/problem+json")
        except Exception:
            log.exception("EPCIS REST request failed", extra={"path": request.path[:200]})
            problem = EpcisProblem(500, IMPLEMENTATION, "the repository could not answer; this is our fault")
            return _json(problem.body(), 500, content_type="application/problem+json")

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "SERVING"})

    # --- queries ---------------------------------------------------------------------------------------

    @staticmethod
    def _params(request: web.Request) -> dict[str, str]:
        params: dict[str, str] = {}
        for name, value in request.query.items():
            if name in params:
                raise _bad(f"{name[:80]!r} is given more than once; list values go in one parameter, '|'-separated")
            params[name] = value
        return params

    async def _answer(self, request: web.Request, params: dict[str, str]) -> web.Response:
        q = parse_query(params)
        if (reader := reader_organization()) is not None:  # a partner's system reads its own and its partners' events
            scope, scope_values = party_scope(reader)
            q.where(scope, *scope_values)
        per_page = _integer("perPage", params["perPage"], 1, MAX_PER_PAGE) if "perPage" in params else DEFAULT_PER_PAGE
        digest = _query_digest(params)
        after, served = _untoken(q, digest, params["nextPageToken"]) if "nextPageToken" in params else (None, 0)
        if q.max_event_count is not None and after is None:
            await self._check_max(q)
        limit = per_page
        if q.event_count_limit is not None:
            limit = max(0, min(per_page, q.event_count_limit - served))
        rows = await self._select(q, after, limit + 1) if limit else []
        headers = {}
        more = len(rows) > limit
        rows = rows[:limit]
        if more and (q.event_count_limit is None or served + limit < q.event_count_limit):
            token = _token(digest, _sort_key(q, rows[-1]), served + len(rows))
            query = {k: v for k, v in request.query.items() if k != "nextPageToken"}
            next_url = request.rel_url.with_query({**query, "nextPageToken": token})  # relative: no Host trusted
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json(query_document(rows), headers=headers)

    async def _check_max(self, q: EventQuery) -> None:
        where = " AND ".join(q.conditions) or "TRUE"
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM events e WHERE {where} LIMIT %s) t",
                                     (*q.values, q.max_event_count + 1))
            (count,) = await cur.fetchone()
        if count > q.max_event_count:
            raise EpcisProblem(413, QUERY_TOO_LARGE, f"more than maxEventCount={q.max_event_count} events match")

    async def _select(self, q: EventQuery, after: list | None, limit: int) -> list[dict]:
        conditions, values = list(q.conditions), list(q.values)
        columns = "e.event_time, e.event_hash" if q.order_by == "eventTime" else "e.ledger_height, e.tx_index, e.event_hash"
        direction = "DESC" if q.descending else "ASC"
        if after is not None:
            marks = ", ".join(["%s"] * len(after))
            conditions.append(f"({columns}) {'<' if q.descending else '>'} ({marks})")
            values.extend(after)
        order = ", ".join(f"{c} {direction}" for c in columns.split(", "))
        where = " AND ".join(conditions) or "TRUE"
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT e.* FROM events e WHERE {where} ORDER BY {order} LIMIT %s", (*values, limit))
            return await cur.fetchall()

    async def get_events(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._params(request))

    async def _with(self, request: web.Request, name: str, value: str) -> web.Response:
        params = self._params(request)
        if name in params:  # both would have to hold: one resource, one value
            raise EpcisProblem(400, QUERY_PARAMETER, f"{name} is fixed by the resource path; do not repeat it")
        return await self._answer(request, {**params, name: value})

    async def events_of_type(self, request: web.Request) -> web.Response:
        event_type = request.match_info["eventType"]
        if event_type not in EVENT_TYPES:
            raise EpcisProblem(404, NO_SUCH_NAME, f"no event type {event_type[:80]!r} (one of {', '.join(EVENT_TYPES)})")
        return await self._with(request, "eventType", event_type)

    async def events_of_epc(self, request: web.Request) -> web.Response:
        return await self._with(request, "MATCH_anyEPC", request.match_info["epc"])

    async def events_at_location(self, request: web.Request) -> web.Response:
        return await self._with(request, "EQ_bizLocation", _gln_or_uri(request.match_info["bizLocation"]))

    async def events_at_read_point(self, request: web.Request) -> web.Response:
        return await self._with(request, "EQ_readPoint", _gln_or_uri(request.match_info["readPoint"]))

    async def events_of_step(self, request: web.Request) -> web.Response:
        return await self._with(request, "EQ_bizStep", request.match_info["bizStep"])

    async def events_of_disposition(self, request: web.Request) -> web.Response:
        return await self._with(request, "EQ_disposition", request.match_info["disposition"])

    async def get_event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["eventID"]
        if len(event_id) > MAX_KEY_URI or "\x00" in event_id:
            raise EpcisProblem(404, NO_SUCH_NAME, "no such event")
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            scope, scope_values = party_scope(reader) if (reader := reader_organization()) is not None else ("TRUE", [])
            await cur.execute(f"SELECT * FROM events e WHERE (event_hash = %s OR event_id = %s) AND {scope} ORDER BY ledger_height LIMIT 1",
                              (event_id, event_id, *scope_values))
            row = await cur.fetchone()
        if row is None:
            raise EpcisProblem(404, NO_SUCH_NAME, f"no event {event_id[:120]!r}")
        return _json(query_document([row]))

    # --- capture ---------------------------------------------------------------------------------------

    async def post_capture(self, request: web.Request) -> web.Response:
        behaviour = request.headers.get("GS1-Capture-Error-Behaviour", "rollback")
        if behaviour not in ("rollback", "proceed"):
            raise EpcisProblem(400, VALIDATION, "GS1-Capture-Error-Behaviour: rollback or proceed")
        if request.content_type not in ("application/json", "application/ld+json"):
            raise EpcisProblem(415, VALIDATION, "send the EPCISDocument as application/json or application/ld+json")
        if request.content_length is not None and request.content_length > MAX_DOCUMENT_BYTES:
            raise self._too_large()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        try:
            # The gRPC capture's checks, answered here as 400: schema, every event, every hash.
            planned = await asyncio.to_thread(plan_capture, body)
        except InvalidArgument as error:
            if any(v.field == "/epcisBody/eventList" and v.description.endswith(f"got {n}")
                   for v in error.field_violations for n in [_count(v.description)] if n > MAX_EVENTS):
                raise self._too_large(error.message) from None
            raise problem_of(error) from None
        capture_id = secrets.token_hex(16)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO capture_jobs VALUES (%s, now(), NULL, true, true, %s, %s, '[]', '[]')",
                (capture_id, behaviour, len(planned)),
            )
        task = asyncio.create_task(self._run_job(capture_id, planned))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return _json({"captureID": capture_id}, 202, {"Location": f"/capture/{capture_id}"})

    @staticmethod
    def _too_large(detail: str | None = None) -> EpcisProblem:
        return EpcisProblem(
            413, CAPTURE_LIMIT,
            detail or f"at most {MAX_EVENTS} events and {MAX_DOCUMENT_BYTES} bytes per capture",
            {"GS1-EPCIS-Capture-Limit": str(MAX_EVENTS), "GS1-EPCIS-Capture-File-Size-Limit": str(MAX_DOCUMENT_BYTES)},
        )

    async def _run_job(self, capture_id: str, planned) -> None:
        errors: list[dict] = []
        hashes: list[str] = []
        try:
            reply = await asyncio.wait_for(self.events.record(planned), CAPTURE_JOB_WAIT_S)
            hashes = [c.event_hash for c in reply.events]
        except DomainError as error:
            errors.append(problem_of(error).body(f"/capture/{capture_id}"))
        except asyncio.CancelledError:
            errors.append(EpcisProblem(503, IMPLEMENTATION, "the repository stopped during the capture; "
                                       "capture the document again (captured events are not duplicated)").body())
        except Exception:
            log.exception("capture job %s failed", capture_id)
            errors.append(EpcisProblem(500, IMPLEMENTATION, "the capture failed; this is our fault").body())
        finally:
            async with self.pool.connection() as conn:
                await conn.execute(
                    "UPDATE capture_jobs SET running = false, success = %s, finished_at = now(), errors = %s,"
                    " event_hashes = %s WHERE capture_id = %s",
                    (not errors, Jsonb(errors), Jsonb(hashes), capture_id),
                )

    async def _stop_jobs(self, app: web.Application) -> None:
        for task in list(self._jobs):
            task.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    async def get_capture(self, request: web.Request) -> web.Response:
        capture_id = request.match_info["captureID"]
        if len(capture_id) != 32 or not all(c in "0123456789abcdef" for c in capture_id):
            raise EpcisProblem(404, NO_SUCH_NAME, f"no capture job {capture_id[:80]!r}")
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM capture_jobs WHERE capture_id = %s", (capture_id,))
            job = await cur.fetchone()
        if job is None:
            raise EpcisProblem(404, NO_SUCH_NAME, f"no capture job {capture_id[:80]!r}")
        if job["running"] and datetime.now(timezone.utc) - job["created_at"] > timedelta(seconds=CAPTURE_JOB_WAIT_S + 60):
            # Outlived any job's limit: the process running it stopped. What it committed stays captured.
            job.update(running=False, success=False, errors=[EpcisProblem(
                503, IMPLEMENTATION, "the capture job was interrupted; capture the document again "
                "(events already captured are not duplicated)").body(f"/capture/{capture_id}")])
        body = {
            "captureID": job["capture_id"],
            "createdAt": _utc(job["created_at"]),
            "running": job["running"],
            "success": job["success"],
            "captureErrorBehaviour": job["error_behaviour"],
            "errors": job["errors"],
        }
        if job["finished_at"] is not None:
            body["finishedAt"] = _utc(job["finished_at"])
        # Where each captured event can be read, in document order (a shelfproof addition).
        body["eventIDs"] = job["event_hashes"]
        return _json(body)


def _count(description: str) -> int:
    """N of plan_capture's "1 to M events, got N"."""
    tail = description.rsplit("got ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _gln_or_uri(value: str) -> str:
    """A path's location: a bare 13-digit GLN (check digit checked) or a location URI."""
    if value.isascii() and value.isdigit():
        if len(value) != 13 or check_digit(value[:12]) != value[12]:
            raise _bad(f"{value[:20]!r} is not a GLN (13 digits, valid check digit)")
        return f"https://id.gs1.org/414/{value}"
    return value


class EpcisRestServer:
    """The binding's HTTP server on loopback; ``port`` is the bound port after start (0 = any free one)."""

    def __init__(self, api: EpcisRestApi, host: str, port: int, ssl_context=None) -> None:
        self.runner = web.AppRunner(api.app(), access_log=None)
        self.host, self.port = host, port
        self.ssl_context = ssl_context  # HTTPS with client certificates required (runtime/tls.py)

    async def start(self) -> int:
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl_context).start()
        self.port = self.runner.addresses[0][1]  # the bound port when 0 was asked
        log.info("EPCIS REST binding listening", extra={"address": f"{self.host}:{self.port}"})
        return self.port

    async def stop(self) -> None:
        await self.runner.cleanup()
