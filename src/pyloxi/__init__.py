"""pyloxi: an eBPF L4 load balancer with a Python control plane."""

__version__ = "0.1.0"
