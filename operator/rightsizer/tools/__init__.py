"""User-facing tools behind the CLI: `rightsizer run`, `make demo`, the results table and HTML report, and the API
reference generated from the CRD."""
