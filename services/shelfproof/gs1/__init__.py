"""GS1 identifiers, Digital Link and EPCIS helpers (see ../shared/notes/gs1.md)."""
