"""The ledger: our CometBFT ABCI application (state machine, proofs), its engines and the gRPC adapter."""
