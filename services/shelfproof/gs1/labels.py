"""Signed item labels: what the brand signs, and the QR code (PNG, SVG) and printable sheets (PDF)."""

from __future__ import annotations

import io
from typing import Sequence

import segno
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from shelfproof.gs1.digital_link import DigitalLink
from shelfproof.gs1.keys import normalize_gtin
from shelfproof.ledger.core.tx import key_id_for

# Domain-separated, so a label signature can never be replayed as a ledger transaction or vice versa.
LABEL_DOMAIN = b"shelfproof-label-v1\n"
QR_ERROR = "m"  # GS1 gives no mandate; M is what GS1 encoders default to (notes/gs1.md §3)


def label_message(gtin14: str, serial: str) -> bytes:
    """The bytes a brand signs for one item: domain ‖ GTIN-14 ‖ "\\n" ‖ serial (UTF-8)."""
    return LABEL_DOMAIN + gtin14.encode() + b"\n" + serial.encode()


def sign_label(signing_key: SigningKey, gtin: str, serial: str, resolver: str) -> DigitalLink:
    gtin14 = normalize_gtin(gtin)
    signature = signing_key.sign(label_message(gtin14, serial)).signature
    return DigitalLink(
        gtin=gtin14, serial=serial, resolver=resolver, signature=signature,
        key_id=key_id_for(bytes(signing_key.verify_key)),
    )


def verify_label(link: DigitalLink, public_key: bytes) -> bool:
    if not link.serial or link.signature is None or len(link.signature) != 64:
        return False
    try:
        VerifyKey(public_key).verify(label_message(link.gtin, link.serial), link.signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def qr_png(uri: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make_qr(uri, error=QR_ERROR, boost_error=False).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def qr_svg(uri: str) -> str:
    out = io.BytesIO()
    segno.make_qr(uri, error=QR_ERROR, boost_error=False).save(out, kind="svg", scale=4, border=4, xmldecl=True)
    return out.getvalue().decode()


def label_sheet_pdf(links: Sequence[DigitalLink], *, page: int, per_page: int = 40, title: str) -> bytes:
    """One A4 page of up to ``per_page`` labels (5 columns), human-readable GTIN and serial under each."""
    columns, cell_w = 5, 38 * mm
    rows = max(1, -(-per_page // columns))
    cell_h = min(34 * mm, (A4[1] - 30 * mm) / rows)
    qr_size = min(cell_w, cell_h) - 10 * mm
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    pdf.setTitle(title)
    pdf.setFont("Helvetica", 8)
    pdf.drawString(12 * mm, A4[1] - 10 * mm, f"{title} — page {page}")
    for n, link in enumerate(links[:per_page]):
        x = 12 * mm + (n % columns) * cell_w
        y = A4[1] - 18 * mm - (n // columns + 1) * cell_h
        pdf.drawImage(ImageReader(io.BytesIO(qr_png(link.to_uri(), scale=3))), x, y + 8 * mm, qr_size, qr_size)
        pdf.setFont("Helvetica", 6)
        pdf.drawString(x, y + 5 * mm, f"(01) {link.gtin}")
        pdf.drawString(x, y + 2 * mm, f"(21) {link.serial}")
    pdf.showPage()
    pdf.save()
    return out.getvalue()


__all__ = ["label_message", "sign_label", "verify_label", "qr_png", "qr_svg", "label_sheet_pdf"]
