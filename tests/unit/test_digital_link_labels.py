"""GS1 Digital Link parsing/building and signed QR labels."""

from __future__ import annotations

import re

import pytest
from nacl.signing import SigningKey

from shelfproof.gs1 import labels
from tests.qr import decode_qr_png
from shelfproof.gs1.digital_link import DigitalLink, InvalidDigitalLink, canonical_item_uri, parse_digital_link
from shelfproof.gs1.serials import generate_serials
from shelfproof.ledger.core.tx import key_id_for

KEY = SigningKey(bytes(range(32)))


def test_canonical_form_from_the_syntax_engine():
    link = DigitalLink("09506000134352", serial="a/b&c", lot="L1", expiry="271231")
    assert link.to_uri() == "https://id.gs1.org/01/09506000134352/10/L1/21/a%2Fb%26c?17=271231"
    assert parse_digital_link(link.to_uri()) == link
    assert canonical_item_uri("9506000134352", "X1") == "https://id.gs1.org/01/09506000134352/21/X1"


def test_a_lot_named_01_is_a_value_not_the_primary_key():
    link = parse_digital_link("https://id.gs1.org/01/09506000134352/10/01/21/S1")
    assert (link.gtin, link.lot, link.serial) == ("09506000134352", "01", "S1")


def test_custom_domain_stem_and_short_gtin_are_normalised():
    link = parse_digital_link("https://brand.example.com/some/stem/01/9506000134352/21/ABC?linkType=gs1:pip")
    assert (link.gtin, link.serial, link.resolver) == ("09506000134352", "ABC", "https://brand.example.com/some/stem")


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("ftp://id.gs1.org/01/09506000134352/21/A", "scheme"),
        ("HtTpS://id.gs1.org/01/09506000134352/21/A", "scheme"),
        ("https://id.gs1.org/01/09506000134353/21/A", "check digit"),
        ("https://id.gs1.org/01/12345/21/A", "digits"),
        ("https://id.gs1.org/01/09506000134352/21/A/", "end in /"),
        ("https://id.gs1.org/01/09506000134352/21/A/10/L1", "order"),
        ("https://id.gs1.org/01/09506000134352/99/A", "qualifier"),
        ("https://id.gs1.org/01/09506000134352/21/A%23B", "CSET 82"),
        ("https://id.gs1.org/01/09506000134352/21/" + "A" * 21, "CSET 82"),
        ("https://id.gs1.org/01/09506000134352?10=L1", "path"),
        ("https://id.gs1.org/01/09506000134352/21/A?17=271231&17=271231", "twice"),
        ("https://id.gs1.org/01/09506000134352/21/A?4321=1", "data attribute"),
        ("https://id.gs1.org/01/09506000134352/21/A?sig=not*base64", "base64url"),
        ("https://id.gs1.org/21/A", "primary key"),
        ("https://id.gs1.org/01/09506000134352/21/A?x=" + "y" * 600, "longer"),
    ],
)
def test_bad_uris_are_refused_with_the_reason(uri, problem):
    with pytest.raises(InvalidDigitalLink, match=re.escape(problem)):
        parse_digital_link(uri)


def test_serials_are_alphanumeric_random_and_distinct():
    serials = generate_serials(100_000)
    assert len(set(serials)) == 100_000
    assert all(re.fullmatch(r"[A-Za-z0-9]{12}", s) for s in serials)
    # Every alphabet character shows up at roughly its share (no bias towards the first 8 bytes).
    counts = {c: 0 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"}
    for serial in serials[:20_000]:
        for c in serial:
            counts[c] += 1
    expected = 20_000 * 12 / 62
    assert all(0.85 * expected < n < 1.15 * expected for n in counts.values())


def test_signed_label_verifies_and_tampering_fails():
    link = labels.sign_label(KEY, "614141123452", "A1b2C3d4E5f6", "https://id.brand.example")
    assert link.key_id == key_id_for(bytes(KEY.verify_key))
    parsed = parse_digital_link(link.to_uri())
    public = bytes(KEY.verify_key)
    assert labels.verify_label(parsed, public)
    assert not labels.verify_label(DigitalLink(parsed.gtin, "A1b2C3d4E5f7", signature=parsed.signature), public)
    assert not labels.verify_label(DigitalLink("00614141123469", parsed.serial, signature=parsed.signature), public)
    assert not labels.verify_label(DigitalLink(parsed.gtin, parsed.serial, signature=bytes(64)), public)
    assert not labels.verify_label(parsed, bytes(SigningKey.generate().verify_key))
    # Ed25519 is deterministic: a reprint is the same label.
    assert labels.sign_label(KEY, "614141123452", "A1b2C3d4E5f6", "https://id.brand.example") == link


def test_qr_png_decodes_to_the_uri_svg_is_xml_and_pdf_has_one_page():
    uri = labels.sign_label(KEY, "614141123452", "A1b2C3d4E5f6", "https://id.brand.example").to_uri()
    assert decode_qr_png(labels.qr_png(uri)) == uri
    svg = labels.qr_svg(uri)
    assert svg.startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    links = [labels.sign_label(KEY, "614141123452", s, "https://id.brand.example") for s in generate_serials(40)]
    pdf = labels.label_sheet_pdf(links, page=1, per_page=40, title="batch B1")
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type /Page[^s]", pdf)) == 1
