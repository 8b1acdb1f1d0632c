"""Cluster: HA state of this node's instances (cistate), and what other cluster parts
(conntrack sync, BGP) hook into. `ClusterState` is owned by the daemon."""

from pyloxi.cluster.state import ClusterConfig, ClusterState, Instance

__all__ = ["ClusterConfig", "ClusterState", "Instance"]
