"""OURS comms server: app factory, auth, HTTP API, the bus, storage and the CLI."""
