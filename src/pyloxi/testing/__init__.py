"""Test and demo support, not part of the load balancer.

`lab` builds network-namespace topologies for the demo, the integration tests and the bench;
`demo` is `make demo`. It ships with the package so `make demo` and the tests run from an
installed pyloxi, but no product package may import it (an import-linter contract).
"""
