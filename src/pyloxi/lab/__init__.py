"""Network-namespace labs: the demo, the integration tests and the bench build their hosts here."""

from pyloxi.lab.netns import Lab, Netns, cleanup_stale
from pyloxi.lab.topology import LbTopology

__all__ = ["Lab", "LbTopology", "Netns", "cleanup_stale"]
