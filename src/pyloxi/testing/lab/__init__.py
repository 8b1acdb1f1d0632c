"""Network-namespace labs (test support): the demo, the integration tests and the bench build
their hosts here."""

from pyloxi.testing.lab.netns import Lab, Netns, cleanup_stale
from pyloxi.testing.lab.topology import LbTopology

__all__ = ["Lab", "LbTopology", "Netns", "cleanup_stale"]
