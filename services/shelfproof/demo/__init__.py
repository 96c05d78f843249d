"""The living demo: a small supply chain seeded through the services' gRPC APIs (``seed``)."""
