"""`blfs ui`: a read-only status page and Prometheus metrics, served from a client
connection to the master (docs/UI.md)."""
