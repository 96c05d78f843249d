"""Hypothesis strategies for any protobuf message, built from its descriptor, with the values hostile
clients send: integers at their type's edges, strings with SQL metacharacters, NULs, Unicode confusables
and over-long runs, identifiers that are nearly valid (a GTIN with a wrong check digit), unknown enum
numbers, nested and repeated fields. The fuzz tests (test_fuzz_*.py) feed them to every entry point.

How many inputs each fuzz test draws: ``SHELFPROOF_FUZZ_EXAMPLES`` (a short run in `make test`; `make fuzz`
sets a long one and prints hypothesis' statistics, which count the inputs run).
"""

from __future__ import annotations

import os

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("SHELFPROOF_FUZZ_EXAMPLES", "20"))


def fuzz_settings(examples: int | None = None) -> settings:
    return settings(
        max_examples=examples or FUZZ_EXAMPLES, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# Strings a hostile client tries, beside random text: SQL and shell metacharacters, path traversal, NUL,
# Unicode confusables of digits and letters (fullwidth, Arabic-Indic, Cyrillic), right-to-left override,
# near-valid GS1 keys, JSON and template fragments, a long run.
HOSTILE_STRINGS = [
    "", " ", "'", "\"", "' OR '1'='1' --", "'); DROP TABLE products; --", "%", "_", "\\", "$(id)", "`id`",
    "../../etc/passwd", "\x00", "a\x00b", "\u202eevil", "\ufeff", "０６１４１４１０００００５", "٠٦١٤١٤١٠٠٠٠٠٥",
    "Ѕ1", "00614141000012", "00614141000013", "0614141000005", "0614141000006", "10614141000019",
    "https://id.gs1.org/01/09506000134352/21/ABC", "01/09506000134352/21/%00", "{}", "[]", "null",
    "{{7*7}}", "${jndi:ldap://127.0.0.1/x}", "x" * 300, "é" * 200,
]
text = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40), st.from_regex(r"[0-9]{1,20}", fullmatch=True))


def _ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edges = sorted({low, high, 0, 1, -1 if signed else 2, low + 1, high - 1})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


_SCALARS: dict[int, st.SearchStrategy] = {
    FieldDescriptor.TYPE_STRING: text,
    FieldDescriptor.TYPE_BYTES: st.one_of(st.binary(max_size=64), st.just(b"\x00" * 32), st.just(b"\xff" * 65)),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_INT32: _ints(32, True), FieldDescriptor.TYPE_SINT32: _ints(32, True),
    FieldDescriptor.TYPE_SFIXED32: _ints(32, True), FieldDescriptor.TYPE_INT64: _ints(64, True),
    FieldDescriptor.TYPE_SINT64: _ints(64, True), FieldDescriptor.TYPE_SFIXED64: _ints(64, True),
    FieldDescriptor.TYPE_UINT32: _ints(32, False), FieldDescriptor.TYPE_FIXED32: _ints(32, False),
    FieldDescriptor.TYPE_UINT64: _ints(64, False), FieldDescriptor.TYPE_FIXED64: _ints(64, False),
}
MAX_DEPTH = 3
MAX_REPEATED = 3


def _enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    # proto3 enums are open: a number the schema does not name is valid on the wire
    return st.one_of(st.sampled_from(known), st.integers(-5, 1000))


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return None if depth >= MAX_DEPTH else messages(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    return _SCALARS.get(field.type)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of ``descriptor``'s type: each field set or left out, repeated fields of a few items."""
    cls = message_factory.GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy] = {}
    for field in descriptor.fields:
        if _is_map(field):
            key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
            key_s, value_s = _value(key, depth), _value(value, depth)
            if key_s is not None and value_s is not None:
                optional[field.name] = st.dictionaries(key_s, value_s, max_size=MAX_REPEATED)
            continue
        item = _value(field, depth)
        if item is None:
            continue
        is_repeated = getattr(field, "is_repeated", None)
        repeated = is_repeated if isinstance(is_repeated, bool) else field.label == FieldDescriptor.LABEL_REPEATED
        optional[field.name] = st.lists(item, max_size=MAX_REPEATED) if repeated else item
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, descriptor, values))


def _build(cls, descriptor: Descriptor, values: dict) -> Message:
    message = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif isinstance(value, list):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message
