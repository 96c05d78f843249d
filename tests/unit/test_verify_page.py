"""The consumer page's landing page claims nothing: no verdict, no verdict colour."""

from __future__ import annotations

import re

from shelfproof.verify.verdict import Verdict
from shelfproof.verify.web import home


async def test_landing_page_is_neutral() -> None:
    page = (await home(None)).text
    banner = re.search(r'<div class="banner ([A-Z]+)" id=verdict data-verdict="([A-Z]*)"', page)
    assert banner is not None, page[:400]
    verdicts = {v.name for v in Verdict}
    assert banner.group(1) not in verdicts and banner.group(2) not in verdicts
    assert not any(f">{name}<" in page for name in verdicts)
