"""Generated EPCIS 2.0 events and GS1 key URIs covering every event type, field and key type (test data).

Serials, lots and references are drawn from characters every GS1 form agrees on, so each identifier
has one canonical Digital Link; the few places where the reference generator is known to differ from
the standard are tested separately (tests/unit/test_event_hash.py).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from shelfproof.gs1.canonical import check_digit

CONTEXT = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
           {"example": "http://ns.example.com/epcis/", "ext2": "https://ext.example.org/vocab/"}]
ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
# Characters a GS1 value may carry raw in both an EPC URN and the canonical Digital Link.
SAFE = ALNUM + "-._'"
HOSTS = ["https://id.gs1.org", "https://brand.example.com", "http://id.gs1.org", "https://id.brand.example/stem/x",
         "https://resolver.example.org:8443/a"]

BIZ_STEPS = ("accepting arriving assembling collecting commissioning consigning creating_class_instance cycle_counting "
             "decommissioning departing destroying disassembling dispensing encoding entering_exiting holding "
             "inspecting installing killing loading other packing picking receiving removing repackaging repairing "
             "replacing reserving retail_selling shipping staging_outbound stock_taking stocking storing "
             "transporting unloading unpacking void_shipping sensor_reporting sampling").split()
DISPOSITIONS = ("active container_closed damaged destroyed dispensed disposed encoded expired in_progress in_transit "
                "inactive no_pedigree_match non_sellable_other partially_dispensed recalled reserved retail_sold "
                "returned sellable_accessible sellable_not_accessible stolen unknown available completeness_verified "
                "completeness_inferred conformant container_open mismatch_instance mismatch_class mismatch_quantity "
                "needs_replacement non_conformant unavailable").split()
BTT = "bol cert desadv inv pedigree po poc prodorder recadv rma testprd testres upevt".split()
SDT = ["owning_party", "possessing_party", "location"]
MEASUREMENTS = ["Temperature", "RelativeHumidity", "Mass", "Length", "Pressure", "Illuminance", "Count", "Speed"]
UOMS = ["KGM", "CEL", "MTR", "LTR", "EA", "A93"]


class Corpus:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.key_types: set[str] = set()

    def text(self, low: int, high: int, chars: str = SAFE) -> str:
        return "".join(self.rng.choice(chars) for _ in range(self.rng.randint(low, high)))

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def company(self, longest: int = 12) -> str:
        return self.rng.choice("123456789") + self.digits(self.rng.randint(5, longest - 1))

    def host(self) -> str:
        return self.rng.choice(HOSTS)

    def instance(self) -> str:
        """One instance-level identifier, of a random GS1 key type, in URN or Digital Link form."""
        r = self.rng
        kind = r.choice(["sgtin", "sgtin", "sscc", "sgln", "grai", "giai", "gsrn", "gsrnp", "gdti", "cpi", "sgcn",
                         "ginc", "gsin", "itip", "upui", "pgln", "dl-gtin", "dl-gtin", "dl-235", "dl-8003",
                         "dl-8004", "dl-8006", "dl-8010", "dl-sscc", "dl-414", "dl-417", "dl-8017", "dl-8018",
                         "dl-253", "dl-255", "dl-401", "dl-402", "dl-alpha"])
        self.key_types.add(kind)
        # The reference misreads a GRAI whose company prefix has 12 digits (tested on its own).
        cp = self.company(11 if kind == "grai" else 12)
        if kind == "sgtin":
            return f"urn:epc:id:sgtin:{cp}.{self.digits(13 - len(cp))}.{self.text(1, 20)}"
        if kind == "sscc":
            return f"urn:epc:id:sscc:{cp}.{self.digits(17 - len(cp))}"
        if kind == "sgln":
            ext = r.choice(["0", self.text(1, 20)])
            return f"urn:epc:id:sgln:{cp}.{self.digits(12 - len(cp))}.{ext}"
        if kind == "grai":
            return f"urn:epc:id:grai:{cp}.{self.digits(12 - len(cp))}.{self.text(1, 16)}"
        if kind == "giai":
            return f"urn:epc:id:giai:{cp}.{self.text(1, 30 - len(cp))}"
        if kind in ("gsrn", "gsrnp"):
            return f"urn:epc:id:{kind}:{cp}.{self.digits(17 - len(cp))}"
        if kind == "gdti":
            return f"urn:epc:id:gdti:{cp}.{self.digits(12 - len(cp))}.{self.text(1, 17)}"
        if kind == "cpi":
            ref = self.text(1, 30 - len(cp), "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")
            return f"urn:epc:id:cpi:{cp}.{ref}.{self.digits(r.randint(1, 12))}"
        if kind == "sgcn":
            return f"urn:epc:id:sgcn:{cp}.{self.digits(12 - len(cp))}.{self.digits(r.randint(1, 12))}"
        if kind == "ginc":
            return f"urn:epc:id:ginc:{cp}.{self.text(1, 30 - len(cp))}"
        if kind == "gsin":
            return f"urn:epc:id:gsin:{cp}.{self.digits(16 - len(cp))}"
        if kind == "itip":
            return f"urn:epc:id:itip:{cp}.{self.digits(13 - len(cp))}.{self.digits(2)}.{self.digits(2)}.{self.text(1, 20)}"
        if kind == "upui":
            return f"urn:epc:id:upui:{cp}.{self.digits(13 - len(cp))}.{self.text(1, 28)}"
        if kind == "pgln":
            return f"urn:epc:id:pgln:{cp}.{self.digits(12 - len(cp))}"
        return self.digital_link(kind)

    def gtin(self) -> str:
        body = self.rng.choice(["0", "1", "9"]) + self.company().ljust(12, "0")[:12]
        return body + check_digit(body)

    def digital_link(self, kind: str) -> str:
        r = self.rng
        h = self.host()
        if kind == "dl-gtin":
            gtin = self.gtin()
            if r.random() < 0.2 and gtin.startswith("0"):
                gtin = gtin[1:]  # GTIN-13 in the path: canonicalised to 14 digits
            path = f"/01/{gtin}"
            shape = r.choice(["21", "10+21", "22+21", "10", "22+10+21", "none"])
            if shape in ("22+21", "22+10+21"):
                path += f"/22/{self.text(1, 2, ALNUM)}"
            if "10" in shape:
                path += f"/10/{self.text(1, 4 if not shape.startswith('22') else 2, ALNUM)}"
            if "21" in shape:
                # The reference drops a CPV only when at most 20 characters follow it.
                path += f"/21/{self.text(1, 20 if not shape.startswith('22') else 6)}"
            query = r.choice(["", "?17=261231", "?linkType=gs1:pip", "?3103=000500&17=270101"])
            return h + path + query
        if kind == "dl-alpha":
            return f"{h}/gtin/{self.gtin()}/lot/{self.text(1, 5, ALNUM)}/ser/{self.text(1, 10)}"
        if kind == "dl-235":
            return f"{h}/01/{self.gtin()}/235/{self.text(1, 28)}"
        if kind == "dl-8003":
            return f"{h}/8003/0{self.gtin()[1:]}{self.text(0, 16)}"
        if kind == "dl-8004":
            return f"{h}/8004/{self.company()}{self.text(1, 12)}"
        if kind == "dl-8006":
            return f"{h}/8006/{self.gtin()}{self.digits(4)}/21/{self.text(1, 20)}"
        if kind == "dl-8010":
            q = f"/8011/{self.digits(r.randint(1, 12))}" if r.random() < 0.6 else ""
            return f"{h}/8010/{self.company()}{self.text(1, 8, '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-')}{q}"
        if kind == "dl-sscc":
            return f"{h}/00/{self.digits(18)}"
        if kind == "dl-414":
            q = f"/254/{self.text(1, 20)}" if r.random() < 0.5 else ""
            return f"{h}/414/{self.digits(13)}{q}"
        if kind == "dl-417":
            return f"{h}/417/{self.digits(13)}"
        if kind in ("dl-8017", "dl-8018"):
            return f"{h}/{kind[3:]}/{self.digits(18)}"
        if kind == "dl-253":
            return f"{h}/253/{self.digits(13)}{self.text(0, 17)}"
        if kind == "dl-255":
            return f"{h}/255/{self.digits(13)}{self.digits(r.randint(0, 12))}"
        if kind == "dl-401":
            return f"{h}/401/{self.company()}{self.text(1, 12)}"
        if kind == "dl-402":
            return f"{h}/402/{self.digits(17)}"
        raise AssertionError(kind)

    def epc_class(self) -> str:
        r = self.rng
        kind = r.choice(["lgtin", "idpat-sgtin", "idpat-grai", "idpat-gdti", "idpat-sgcn", "idpat-cpi", "idpat-itip",
                         "idpat-upui", "dl-class"])
        self.key_types.add(kind)
        cp = self.company(11 if kind in ("idpat-grai", "idpat-gdti", "idpat-sgcn") else 12)
        if kind == "lgtin":
            return f"urn:epc:class:lgtin:{cp}.{self.digits(13 - len(cp))}.{self.text(1, 20)}"
        if kind in ("idpat-sgtin", "idpat-upui"):
            return f"urn:epc:idpat:{kind[6:]}:{cp}.{self.digits(13 - len(cp))}.*"
        if kind in ("idpat-grai", "idpat-gdti", "idpat-sgcn"):
            return f"urn:epc:idpat:{kind[6:]}:{cp}.{self.digits(12 - len(cp))}.*"
        if kind == "idpat-cpi":
            return f"urn:epc:idpat:cpi:{cp}.{self.text(1, 30 - len(cp), '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-')}.*"
        if kind == "idpat-itip":
            return f"urn:epc:idpat:itip:{cp}.{self.digits(13 - len(cp))}.{self.digits(2)}.{self.digits(2)}.*"
        return f"{self.host()}/01/{self.gtin()}" + (f"/10/{self.text(1, 10, ALNUM)}" if r.random() < 0.5 else "")

    def time(self) -> str:
        r = self.rng
        offset = timedelta(minutes=r.choice([-600, -330, -60, 0, 60, 120, 345, 780]))
        base = datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=r.randrange(0, 60_000_000))
        when = (base + timedelta(microseconds=r.randrange(0, 999_000))).astimezone(timezone(offset))
        text = when.isoformat(timespec=r.choice(["milliseconds", "microseconds", "seconds"]))
        return text.replace("+00:00", "Z") if r.random() < 0.5 else text

    def offset(self) -> str:
        return self.rng.choice(["+01:00", "-05:00", "+00:00", "+05:30", "-10:00", "+13:00", "+14:00"])

    def location(self) -> dict[str, Any]:
        r = self.rng
        place: dict[str, Any] = {"id": r.choice([
            f"urn:epc:id:sgln:{(cp := self.company())}.{self.digits(12 - len(cp))}.{r.choice(['0', self.text(1, 6, ALNUM)])}",
            f"{self.host()}/414/{self.digits(13)}", f"https://id.gs1.org/414/{self.digits(13)}/254/{self.text(1, 5, ALNUM)}"])}
        if r.random() < 0.15:
            place["example:room"] = "r" + self.text(3, 6, ALNUM)
        return place

    def quantities(self) -> list[dict[str, Any]]:
        out = []
        for _ in range(self.rng.randint(1, 3)):
            q: dict[str, Any] = {"epcClass": self.epc_class()}
            if self.rng.random() < 0.8:
                q["quantity"] = self.rng.choice([self.rng.randint(1, 500), round(self.rng.uniform(0.1, 99), 3), 2.0])
                if self.rng.random() < 0.6:
                    q["uom"] = self.rng.choice(UOMS)
            out.append(q)
        return out

    def extension_value(self, depth: int = 0) -> Any:
        r = self.rng
        choice = r.randrange(6 if depth < 2 else 3)
        if choice == 0:
            # Not a bare CBV word: the reference expands those wherever they occur in a document.
            return "v" + self.text(3, 12, ALNUM)
        if choice == 1:
            return r.choice([r.randint(0, 10_000), round(r.uniform(-50, 50), 2), 12.50, True, False])
        if choice == 2:
            return self.instance()
        if choice == 3:
            return {f"example:{self.text(1, 6, 'abcdefgh')}": self.extension_value(depth + 1) for _ in range(r.randint(1, 3))}
        if choice == 4:
            return [self.extension_value(depth + 2) for _ in range(r.randint(1, 3))]
        return {"@value": "w" + self.text(3, 5, ALNUM)} if r.random() < 0.2 else f"ext2:{self.text(1, 6, 'abcdef')}"

    def sensor_elements(self) -> list[dict[str, Any]]:
        r = self.rng
        out = []
        for _ in range(r.randint(1, 2)):
            element: dict[str, Any] = {}
            if r.random() < 0.8:
                meta: dict[str, Any] = {"time": self.time()}
                for name in ("startTime", "endTime"):
                    if r.random() < 0.4:
                        meta[name] = self.time()
                for name in ("deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "bizRules"):
                    if r.random() < 0.3:
                        meta[name] = f"https://sensors.example.com/{name}/{self.text(1, 6, ALNUM)}"
                if r.random() < 0.2:
                    meta["example:firmware"] = "f" + self.text(3, 5, ALNUM)
                element["sensorMetadata"] = meta
            reports = []
            for _ in range(r.randint(1, 3)):
                report: dict[str, Any] = {"type": r.choice(MEASUREMENTS + ["gs1:Temperature"])}
                for name, make in (
                    ("value", lambda: round(r.uniform(-40, 60), 2)), ("minValue", lambda: r.randint(-40, 0)),
                    ("maxValue", lambda: r.randint(1, 90)), ("meanValue", lambda: round(r.uniform(0, 30), 1)),
                    ("sDev", lambda: 0.5), ("percRank", lambda: 50), ("percValue", lambda: 12.25),
                    ("uom", lambda: r.choice(UOMS)), ("time", self.time),
                    ("deviceID", lambda: f"urn:epc:id:giai:4000001.{self.text(1, 8, ALNUM)}"),
                    ("exception", lambda: r.choice(["ALARM_CONDITION", "ERROR_CONDITION"])),
                    ("component", lambda: r.choice(["x", "y", "z", "axial_distance", "elevation_angle"])),
                    ("stringValue", lambda: "s" + self.text(3, 8, ALNUM)), ("booleanValue", lambda: r.random() < 0.5),
                    ("hexBinaryValue", lambda: self.text(2, 8, "0123456789ABCDF")),  # "8E93" reads as a float
                    ("uriValue", lambda: f"https://example.com/{self.text(1, 6, ALNUM)}"),
                    ("microorganism", lambda: "https://www.ncbi.nlm.nih.gov/taxonomy/1126011"),
                    ("chemicalSubstance", lambda: "https://identifiers.org/inchikey:CZMRCDWAGMRECN-UGDNZRGBSA-N"),
                    ("coordinateReferenceSystem", lambda: "http://www.opengis.net/def/crs/EPSG/0/4979"),
                    ("rawData", lambda: f"https://sensors.example.com/raw/{self.text(1, 6, ALNUM)}"),
                    ("dataProcessingMethod", lambda: "https://example.com/method/1"),
                    ("deviceMetadata", lambda: "https://example.com/device/1"),
                ):
                    if r.random() < 0.25:
                        report[name] = make()
                if r.random() < 0.15:
                    report["example:calibrated"] = "c" + self.text(3, 4, ALNUM)
                reports.append(report)
            element["sensorReport"] = reports
            if r.random() < 0.1:
                element["example:batchRef"] = "b" + self.text(3, 6, ALNUM)
            out.append(element)
        return out

    def event(self, event_type: str | None = None) -> dict[str, Any]:
        """One schema-valid event with a random subset of every field its type allows."""
        r = self.rng
        event_type = event_type or r.choice(["ObjectEvent", "AggregationEvent", "TransactionEvent",
                                             "TransformationEvent", "AssociationEvent"])
        e: dict[str, Any] = {"type": event_type, "eventTime": self.time(), "eventTimeZoneOffset": self.offset()}
        if r.random() < 0.3:
            e["eventID"] = f"urn:uuid:{self.text(8, 8, '0123456789abcdef')}-0000-4000-8000-{self.digits(12)}"
        if r.random() < 0.2:
            e["recordTime"] = self.time()
        if r.random() < 0.2:
            certs = [f"https://cert.example.com/{self.text(1, 8, ALNUM)}" for _ in range(r.randint(1, 2))]
            e["certificationInfo"] = certs if len(certs) > 1 or r.random() < 0.5 else certs[0]
        if r.random() < 0.1:
            e["errorDeclaration"] = {"declarationTime": self.time(), "reason": r.choice(["did_not_occur", "incorrect_data"])}
        epcs = lambda low=1, high=6: [self.instance() for _ in range(r.randint(low, high))]  # noqa: E731
        action = r.choice(["ADD", "OBSERVE", "DELETE"])
        if event_type == "ObjectEvent":
            e["epcList"] = epcs()
            if r.random() < 0.4:
                e["quantityList"] = self.quantities()
            e["action"] = action
        elif event_type in ("AggregationEvent", "AssociationEvent"):
            e["parentID"] = self.instance()
            e["childEPCs"] = epcs()
            if r.random() < 0.3:
                e["childQuantityList"] = self.quantities()
            e["action"] = action
        elif event_type == "TransactionEvent":
            if r.random() < 0.5:
                e["parentID"] = self.instance()
            e["epcList"] = epcs()
            if r.random() < 0.3:
                e["quantityList"] = self.quantities()
            e["action"] = action
        else:
            e["inputEPCList"] = epcs()
            e["outputEPCList"] = epcs()
            if r.random() < 0.5:
                e["inputQuantityList"] = self.quantities()
            if r.random() < 0.5:
                e["outputQuantityList"] = self.quantities()
            if r.random() < 0.4:
                e["transformationID"] = r.choice([f"urn:epc:id:gdti:{(cp := self.company())}.{self.digits(12 - len(cp))}.{self.text(1, 10, ALNUM)}",
                                                  f"https://transform.example.com/{self.text(1, 8, ALNUM)}"])
        if r.random() < 0.8:
            e["bizStep"] = r.choice(BIZ_STEPS + ["https://ns.example.com/step/custom"])
        if r.random() < 0.8:
            e["disposition"] = r.choice(DISPOSITIONS + ["https://ns.example.com/disp/custom"])
        if event_type in ("ObjectEvent", "TransformationEvent") and r.random() < 0.2:
            pd = {}
            for key in r.sample(["set", "unset"], r.randint(1, 2)):
                pd[key] = r.sample(DISPOSITIONS, r.randint(1, 2))
            e["persistentDisposition"] = pd
        if r.random() < 0.7:
            e["readPoint"] = self.location()
        if r.random() < 0.7:
            e["bizLocation"] = self.location()
        if event_type == "TransactionEvent" or r.random() < 0.5:
            bts = []
            for _ in range(r.randint(1, 3)):
                bts.append({"type": r.choice(BTT + ["https://ns.example.com/btt/custom"]),
                            "bizTransaction": r.choice([f"urn:epcglobal:cbv:bt:{self.digits(13)}:{self.text(1, 8, ALNUM)}",
                                                        f"https://po.example.com/{self.text(1, 10, ALNUM)}"])})
            e["bizTransactionList"] = bts
        for key, member in (("sourceList", "source"), ("destinationList", "destination")):
            if r.random() < 0.4:
                e[key] = [{"type": r.choice(SDT), member: r.choice([f"urn:epc:id:pgln:{(cp := self.company())}.{self.digits(12 - len(cp))}",
                                                                      f"https://id.gs1.org/417/{self.digits(13)}",
                                                                      f"urn:epc:id:sgln:{(cp2 := self.company())}.{self.digits(12 - len(cp2))}.0"])}
                          for _ in range(r.randint(1, 2))]
        if r.random() < 0.3:
            e["sensorElementList"] = self.sensor_elements()
        if (event_type == "ObjectEvent" and action == "ADD" or event_type == "TransformationEvent") and r.random() < 0.5:
            ilmd: dict[str, Any] = {}
            for _ in range(r.randint(1, 4)):
                ilmd[r.choice(["example:lot", "example:bestBefore", "example:grade", "ext2:origin", "example:dims"])] = self.extension_value()
            e["ilmd"] = ilmd
        for _ in range(r.choice([0, 0, 0, 1, 2])):
            e[r.choice(["example:myField", "example:temperatureZone", "ext2:note", "example:nested"])] = self.extension_value()
        return e

    def document(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        return {"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0",
                "creationDate": "2026-11-25T10:00:00.000+01:00", "epcisBody": {"eventList": events}}
