"""What a Redis URL names: one Redis (`redis://`, `rediss://`), or a Redis Cluster
(`redis+cluster://host:port`, `rediss+cluster://`) seeded by one of its nodes."""

from __future__ import annotations

__all__ = ["CLUSTER_SCHEMES", "is_cluster_url", "node_url"]

# A cluster's URL scheme -> the scheme of each of its nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """The seed node's own URL, for a cluster's URL; any other URL as it is."""
    scheme, separator, rest = url.partition("://")
    node_scheme = CLUSTER_SCHEMES.get(scheme.lower())
    return url if node_scheme is None else f"{node_scheme}{separator}{rest}"
