"""Netlink readers (NETLINK_SOCK_DIAG): pure readers like those in procfs/, no Prometheus imports."""
