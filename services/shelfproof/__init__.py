"""shelfproof: supply-chain and retail authenticity on a BFT ledger."""
