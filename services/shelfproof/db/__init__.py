"""The PostgreSQL query model: tables projected from committed ledger transactions, and migrations."""
