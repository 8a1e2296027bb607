"""Adapters over the node's kernel state: netlink (pyroute2), sysctls, iptables/ebtables."""
