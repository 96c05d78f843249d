"""The registry service: products (and, as they land, items, labels, EPCIS events, recalls,
inventory), written through the ledger and read from the PostgreSQL query model."""
