"""The pricing service: the price book, promotions and the price-change stream, over the ledger."""
