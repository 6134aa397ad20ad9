"""Where a namespace's memories live: a shared bucket collection, or a collection of its own.

Measured with chromadb 1.5.9 on 2 cores before choosing (see bench/memory_recall.py for today's):

* every loaded collection costs about 2.8 MB of RAM, so one collection per server does not scale to
  hundreds of small servers;
* one shared collection filtered by namespace slows with its total size (p95 42 ms at 50k rows):
  Chroma's filtered HNSW search walks most of the graph when few rows pass the filter;
* a filter that matches every row is just as slow (114 ms at 50k), so a server's own collection is
  queried with no filter at all, and isolation there comes from the collection itself.

So: small servers share ``buckets`` collections (a server's bucket is fixed by a hash of its
namespace), which keeps each bucket at a few thousand rows; a server that passes
``dedicated_threshold`` rows moves to its own collection. Collection names need 3 to 512 characters
of ``[a-zA-Z0-9._-]``, starting and ending alphanumeric.
"""

from __future__ import annotations

import hashlib
import re

_PLAIN_NS_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_-]{0,62}[a-zA-Z0-9])?$")

PREFIX = "agentbot-mem"
META_EMBEDDING = "agentbot_embedding"
META_DIM = "agentbot_dim"
META_ROLE = "agentbot_role"
META_NAMESPACE = "agentbot_namespace"
META_STATE = "agentbot_state"
META_BUCKETS = "agentbot_buckets"
ROLE_SHARED = "shared"
ROLE_DEDICATED = "dedicated"
STATE_MIGRATING = "migrating"
STATE_READY = "ready"


def shared_name(prefix: str, bucket: int) -> str:
    return f"{prefix}-shared-{bucket:03d}"


def dedicated_name(prefix: str, namespace: str) -> str:
    """A readable name for guild ids; a hash for anything Chroma would not accept."""
    if _PLAIN_NS_RE.match(namespace):
        return f"{prefix}-ns-{namespace}"
    return f"{prefix}-nh-{hashlib.sha256(namespace.encode()).hexdigest()[:40]}"


def bucket_of(namespace: str, buckets: int) -> int:
    return int(hashlib.sha256(namespace.encode()).hexdigest()[:8], 16) % buckets
