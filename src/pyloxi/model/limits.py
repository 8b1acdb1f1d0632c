"""Every limit of the wire objects and of the datapath, defined once.

The wire models (`pyloxi.model.fields`), the engine's semantic checks, the CLI, the probe
manager and the Kubernetes agent import these; none defines its own copy. Values the C
datapath also has (bpf/include/pyloxi/maps.h) are compared with the header's `#define`s and
enums by tests/unit/test_limits.py, so the two cannot drift.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------- shared with maps.h

MAX_SERVICES: Final = 65536  # PL_MAX_SERVICES: service ids 1..MAX_SERVICES-1; 0 never used
MAX_ENDPOINTS: Final = 1024  # PL_MAX_EPS: endpoints per rule (loxilb: 32)
MAX_SLOTS: Final = 262139  # PL_MAX_SLOTS: the longest selection table, a prime (Maglev)
# Selection tables are sized to their endpoints (engine/selection.py): a priority rotation is
# at most max(SLOT_TABLE_SIZE, endpoints) long; a Maglev table is the smallest prime that gives
# every endpoint its weight share within MAGLEV_FAIRNESS, at most MAX_SLOTS.
SLOT_TABLE_SIZE: Final = 1021
MAGLEV_FAIRNESS: Final = 0.01  # the busiest endpoint's slots <= (1 + this) x its weight share
MAX_SERVICE_KEYS: Final = 65536  # PL_MAX_SVC_KEYS: one per VIP, protocol and port, all rules
MAX_WEIGHT: Final = 255  # struct ep_val.weight is a __u8 (loxilb's weight is a uint8 too)
PORT_MAX: Final = 65535  # struct svc_key.port is a __u16

# ---------------------------------------------------------------- wire values

UINT32_MAX: Final = 2**32 - 1  # block (mark): a uint32 in loxilb
MAX_PORTS_PER_SERVICE: Final = 4096  # a port range takes one service key per port
MAX_IDLE_TIMEOUT: Final = 86400  # inactiveTimeOut, seconds
# Default inactiveTimeOut (0 on the wire) per protocol, seconds.
DEFAULT_IDLE_TIMEOUT: Final[dict[str, int]] = {"tcp": 240, "sctp": 240, "udp": 20, "icmp": 20}
MAX_PROBE_TIMEOUT: Final = 86400  # rule probeTimeout (the probe period), seconds
MAX_PROBE_PERIOD: Final = 86400  # endpoint probeDuration (loxilb MaxHostProbeTime), seconds
MAX_PROBE_RETRIES: Final = 100  # probeRetries / inactiveReTries (loxilb MaxDflLbaInactiveTries)
MAX_SECONDARY_IPS: Final = 3  # SCTP secondaryIPs per rule (loxilb: 3)
MAX_ALLOWED_SOURCES: Final = 256  # allowedSources per rule

# ---------------------------------------------------------------- text (characters)
# Generous for every legitimate value, small enough that no single field can carry a payload
# (the request body is capped at 1 MiB anyway).

MAX_ADDRESS_LEN: Final = 64  # an IP address or CIDR, with room for stray spaces (IPv6: 49)
MAX_NAME_LEN: Final = 256  # rule and endpoint names (k8s "<namespace>_<service>" is <= 127)
MAX_HOST_LEN: Final = 1024  # L7 host / URL of a rule
MAX_WORD_LEN: Final = 32  # enum-like words: protocol, probe type, state
MAX_PROBE_TEXT_LEN: Final = 4096  # probe request / expected response payloads
MAX_COUNTER_LEN: Final = 64  # output-only "<packets>:<bytes>" (2 x 20 digits)
