"""The consumer-facing HTTP service: the Digital Link path answers with a verdict, as a small HTML
page or as JSON (``Accept: application/json`` or ``?format=json``).

aiohttp: one asyncio server and client with a C HTTP parser, fast enough for thousands of scans a
second on one core, with nothing between the request and our handler; the page is plain HTML and
CSS plus a few lines of script for the optional location share.
"""

from __future__ import annotations

import html
import logging
from typing import Awaitable, Callable

import orjson
from aiohttp import web

from shelfproof.gs1.digital_link import InvalidDigitalLink, parse_digital_link
from shelfproof.runtime.errors import DependencyUnavailable
from shelfproof.verify import geo
from shelfproof.verify.ratelimit import RateLimiter
from shelfproof.verify.service import Verifier

log = logging.getLogger(__name__)

MAX_PATH_QS = 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
VERIFIER = web.AppKey("verifier", Verifier)
LIMITER = web.AppKey("limiter", RateLimiter)
ORIGIN = web.AppKey("origin", str)


class HttpProblem(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


def wants_json(request: web.Request) -> bool:
    if request.query.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


# --- rendering -----------------------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}body{margin:0;font:18px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
color:#111;background:#fff}main{max-width:40rem;margin:0 auto;padding:0 1rem 2rem}
.banner{padding:1.2rem 1rem;color:#fff;font-weight:700}.banner h1{margin:0;font-size:1.7rem}
.GENUINE{background:#0a6b2d}.COUNTERFEIT{background:#a50d0d}.SUSPICIOUS{background:#8a4b00}
.RECALLED{background:#5c0a5c}.ERROR{background:#333}.NEUTRAL{background:#1f3347}
ul{padding-left:1.2rem}li{margin:.25rem 0}.warn{background:#fff4c2;border-left:6px solid #8a6d00;padding:.5rem .8rem;margin:.8rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem}dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
details{margin-top:1rem}code{font-size:.8rem;overflow-wrap:anywhere}button{font:inherit;padding:.6rem 1rem;
border:2px solid #111;background:#fff;border-radius:.4rem;margin-top:1rem}small{color:#444}
"""


def _page(title: str, verdict_class: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · shelfproof</title><style>{_CSS}</style></head><body>"
        f'<div class="banner {verdict_class}" id=verdict data-verdict="{verdict_class}"><h1>{html.escape(title)}</h1></div>'
        f"<main>{body}</main></body></html>"
    )


def _items(values: list[str]) -> str:
    return "".join(f"<li>{html.escape(v)}</li>" for v in values)


def render_report(report: dict) -> str:
    e = html.escape
    p = report["product"]
    parts = []
    if report["verdict"] == "RECALLED":
        parts.append(f'<p class=warn id=recall><strong>{e(report["reasons"][0])}</strong></p>')
    parts.append(f"<ul id=reasons>{_items(report['reasons'])}</ul>")
    # What the ledger proves did not happen ("not recalled — proven"), said where the verdict is read.
    checks = [f for f in report["facts"]["proven"] if f.endswith("— proven")]
    if checks:
        parts.append(f"<ul id=proven-checks>{_items(checks)}</ul>")
    if report["warnings"]:
        parts.append(f'<div class=warn id=warnings><strong>Warnings</strong><ul>{_items(report["warnings"])}</ul></div>')
    parts.append(
        "<h2>Product</h2><dl>"
        f"<dt>Name</dt><dd>{e(p['name'] or 'unknown')}</dd><dt>Brand</dt><dd>{e(p['brand'] or 'unknown')}</dd>"
        f"<dt>GTIN</dt><dd>{e(p['gtin'])}</dd><dt>Serial</dt><dd>{e(p['serial'])}</dd>"
        + (f"<dt>Lot</dt><dd>{e(p['lot'])}</dd>" if p["lot"] else "")
        + (f"<dt>Expiry</dt><dd>{e(p['expiry'])}</dd>" if p["expiry"] else "")
        + "</dl>"
    )
    if report["journey"]:
        steps = "".join(
            f"<li>{e(s['step'].replace('_', ' '))}"
            + (f" at {e(s['location'] or s['location_gln'])}" if s["location_gln"] else "")
            + (f" <small>({e(s['disposition'].replace('_', ' '))})</small>" if s["disposition"] else "")
            + (f" <small>{e(s['time'])}</small>" if s["time"] else "")
            + f" <small>block {s['height']}</small></li>"
            for s in report["journey"]
        )
        parts.append(f"<h2>Journey</h2><ol id=journey>{steps}</ol>")
    evidence = report["evidence"]
    v = evidence["validators"]
    parts.append(
        "<h2>Ledger evidence</h2><dl>"
        f"<dt>Block height</dt><dd>{evidence['height']}</dd>"
        f"<dt>App hash</dt><dd><code>{e(evidence['app_hash'])}</code></dd>"
        f"<dt>Signed by</dt><dd>{v['signed']} validator(s), {v['signed_power']} of {v['total_power']} voting power, "
        f"header {evidence['header_height']}</dd></dl>"
        f"<details><summary>Proven facts ({len(report['facts']['proven'])})</summary><ul>{_items(report['facts']['proven'])}</ul></details>"
        f"<details><summary>Reported, not proven</summary><ul>{_items(report['facts']['reported'])}</ul></details>"
        "<p><small>Check it yourself: <code>shelfproof verify URL</code> trusts only the validators' signatures.</small></p>"
    )
    if report["verdict"] != "COUNTERFEIT" and not report["scan"]["cell"]:
        parts.append(
            '<button id=share type=button>Share my approximate area</button>'
            "<p><small>Only a coarse area (about 40 km) is kept, never your address or IP; it helps spot copied codes.</small></p>"
            '<script src="/share.js"></script>'
        )
    return _page(report["headline"], report["verdict"], "".join(parts))


def render_problem(problem: HttpProblem) -> str:
    return _page(problem.title, "ERROR", f"<p id=problem>{html.escape(problem.detail)}</p>")


# The page sends its time zone once, in the background (no permission asked): the verifier keeps only
# the coarse region around the zone's principal city. The button shares a cell instead.
SHARE_JS = """(function(){var tz='';try{tz=Intl.DateTimeFormat().resolvedOptions().timeZone||''}catch(e){}
var h=new URL(location.href);if(tz&&!h.searchParams.has('tz')&&!h.searchParams.has('cell')){h.searchParams.set('tz',tz);
fetch(h,{headers:{Accept:'application/json'},credentials:'omit'}).then(function(){document.body.dataset.tzSent='1'},function(){})}
var b=document.getElementById('share');if(!b||!navigator.geolocation)return;
var A='0123456789bcdefghjkmnpqrstuvwxyz';function gh(la,lo){var a=[-90,90],o=[-180,180],s='',bit=0,v=0,e=true;
while(s.length<4){var r=e?o:a,c=e?lo:la,m=(r[0]+r[1])/2;v=v*2+(c>=m?1:0);if(c>=m)r[0]=m;else r[1]=m;e=!e;
if(++bit==5){s+=A[v];bit=0;v=0}}return s}
b.onclick=function(){navigator.geolocation.getCurrentPosition(function(p){var u=new URL(location.href);
u.searchParams.set('cell',gh(p.coords.latitude,p.coords.longitude));location.replace(u)},function(){b.textContent='Location not shared'},
{enableHighAccuracy:false,maximumAge:600000,timeout:10000})}})();
"""


# --- handlers -------------------------------------------------------------------------------------------


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def verify_item(request: web.Request) -> web.StreamResponse:
    if len(request.raw_path) > MAX_PATH_QS:
        raise HttpProblem(400, "Code not readable", f"The address is longer than {MAX_PATH_QS} characters.")
    wait = request.app[LIMITER].acquire(_client(request))
    if wait:
        raise HttpProblem(
            429, "Too many checks", "Too many checks from your network; please wait a moment.",
            {"Retry-After": str(max(1, round(wait)))},
        )
    try:
        link = parse_digital_link(request.app[ORIGIN] + request.raw_path, max_length=MAX_PATH_QS + len(request.app[ORIGIN]))
    except InvalidDigitalLink as err:
        raise HttpProblem(400, "Code not readable", f"This is not a valid product code: {err}.") from None
    if not link.serial:
        raise HttpProblem(404, "Not an item code", "This page checks serialized items: the address needs /21/{serial}.")
    cell = ""
    if "cell" in request.query:
        try:
            cell = geo.normalize_cell(request.query["cell"])
        except geo.InvalidCell as err:
            raise HttpProblem(400, "Location not readable", str(err)) from None
    region = ""
    if "tz" in request.query and not cell:
        try:
            region = geo.region_of_time_zone(request.query["tz"])
        except geo.InvalidCell as err:
            raise HttpProblem(400, "Time zone not readable", str(err)) from None
    report = await request.app[VERIFIER].verify(link, client=_client(request), cell=cell, region=region)
    if wants_json(request):
        # orjson's bytes as the body: no str round trip of a 15 KB report
        return web.Response(body=orjson.dumps(report), content_type="application/json", headers=SECURITY_HEADERS)
    return web.Response(text=render_report(report), content_type="text/html", headers=SECURITY_HEADERS)


async def home(request: web.Request) -> web.Response:
    body = (
        "<p>Scan the QR code on a product to check that it is genuine. Each code carries the brand's "
        "signature; this page checks it and the product's record on the shelfproof ledger.</p>"
    )
    # nothing was verified here: no verdict colour
    return web.Response(text=_page("shelfproof verify", "NEUTRAL", body), content_type="text/html", headers=SECURITY_HEADERS)


async def share_js(request: web.Request) -> web.Response:
    return web.Response(text=SHARE_JS, content_type="application/javascript", headers={"Cache-Control": "max-age=3600"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "SERVING"})


@web.middleware
async def problems(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every failure becomes a clear page or JSON with the right status; never a stack trace."""
    try:
        return await handler(request)
    except HttpProblem as raised:
        problem = raised
    except web.HTTPException as err:
        if err.status < 400:
            raise
        title = "Page not found" if err.status == 404 else err.reason
        detail = "There is nothing at this address." if err.status == 404 else err.reason
        problem = HttpProblem(err.status, title, detail)
    except DependencyUnavailable as err:
        log.warning("verification unavailable", extra={"error": str(err)})
        problem = HttpProblem(503, "Please try again", "The check cannot be completed right now.", {"Retry-After": "5"})
    except Exception:  # noqa: BLE001 - logged with its trace, answered without one
        log.exception("verification failed")
        problem = HttpProblem(500, "Something went wrong", "The check could not be completed.")
    headers = {**SECURITY_HEADERS, **problem.headers}
    if wants_json(request):
        return web.json_response(
            {"error": {"status": problem.status, "title": problem.title, "detail": problem.detail}},
            status=problem.status, headers=headers,
        )
    return web.Response(text=render_problem(problem), status=problem.status, content_type="text/html", headers=headers)


def build_app(verifier: Verifier, limiter: RateLimiter, origin: str) -> web.Application:
    app = web.Application(middlewares=[problems], client_max_size=16 * 1024)
    app[VERIFIER] = verifier
    app[LIMITER] = limiter
    app[ORIGIN] = origin.rstrip("/")
    app.router.add_get("/", home)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/share.js", share_js)
    app.router.add_get(r"/01/{rest:.+}", verify_item)
    return app
