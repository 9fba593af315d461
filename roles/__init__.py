"""One package per concern; each exposes @deploy functions that read host.data."""
