"""Consumer verification: a scanned QR code's verdict, with the ledger's proof behind it."""
