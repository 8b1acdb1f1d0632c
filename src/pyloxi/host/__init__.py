"""The LB host itself: interfaces, VIP addresses, sysctls, source-address lookups (netlink)."""
