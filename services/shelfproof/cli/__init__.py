"""The `shelfproof` command."""
