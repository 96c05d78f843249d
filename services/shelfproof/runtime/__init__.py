"""Shared runtime every shelfproof service imports: settings, logging, the gRPC server bootstrap,
the error interceptor, request ids, client helpers and the local PostgreSQL cluster."""
