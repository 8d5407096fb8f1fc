"""The one place a NATS connection is built (the daemon, `edgeml cluster`, the tests' tools
go through it), and the KV operations a cluster of nodes needs, on bytes only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from typing import Any

import nats
import nats.js.errors as js_errors
from nats.aio.client import Client
from nats.js import api
from nats.js.kv import KeyValue

from edgeml.config import NatsConfig
from edgeml.errors import TransportError

__all__ = [
    "FAILURES",
    "Client",
    "Conflict",
    "KeyValue",
    "buckets",
    "checkpoint_key",
    "cluster_view",
    "command_subject",
    "connect",
    "kv_get",
    "kv_put",
    "open_buckets",
    "send_command",
    "snapshot_key",
    "streams",
]


# What a request to the servers raises when they do not answer in time or refuse it.
FAILURES = (nats.errors.Error, TimeoutError)


# How long a first connection is tried before giving up.
CONNECT_S = 5.0


class Conflict(Exception):
    """A compare-and-set lost: another node wrote the key since we read it."""


async def connect(n: NatsConfig, name: str, **options: Any) -> Client:
    """A connection to the servers of `n`, with its credentials and TLS; it reconnects on
    its own (nats-py keeps the subscriptions).
    """
    if n.credentials_file is not None:
        options["user_credentials"] = str(n.credentials_file)
    if n.tls is not None:
        context = ssl.create_default_context(cafile=str(n.tls.ca_file) if n.tls.ca_file else None)
        if n.tls.cert_file is not None:
            key = str(n.tls.key_file) if n.tls.key_file else None
            context.load_cert_chain(str(n.tls.cert_file), key)
        options["tls"] = context
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("error_cb", _quiet)
    where = ", ".join(n.servers)
    try:
        # nats-py retries a first connection as long as a lost one: bound it.
        async with asyncio.timeout(CONNECT_S):
            return await nats.connect(list(n.servers), name=name, **options)
    except TimeoutError:
        raise TransportError(
            f"nats: cannot connect to {where} (tried for {CONNECT_S:.0f} s)"
        ) from None
    except (OSError, nats.errors.Error) as exc:
        raise TransportError(f"nats: cannot connect to {where}: {exc}") from exc


async def _quiet(exc: Exception) -> None:
    """nats-py reports each failed attempt; the caller reports the outcome once."""


def snapshot_key(partition: int, token: str) -> str:
    """The KV key of one device key's snapshot: `<partition>.<key>`, the key as it is when
    KV allows its characters, else `=` and its URL-safe base64.
    """
    if token and all((c.isalnum() and c.isascii()) or c in "-_" for c in token):
        return f"{partition}.{token}"

    return f"{partition}.={base64.urlsafe_b64encode(token.encode()).decode().rstrip('=')}"


def command_subject(stream: str, partition: int) -> str:
    """Where the owner of a partition takes `edgeml models` commands for its keys."""
    return f"{stream}_CMD.{partition}"


async def send_command(
    n: NatsConfig, partition: int, command: dict[str, Any], blob: bytes | None
) -> dict[str, Any]:
    """Ask the owner of `partition` to apply a command; its answer (status, result).
    TransportError when no node owns the partition or it does not answer.
    """
    nc = await connect(n, "edgeml-command")
    try:
        msg = await nc.request(
            command_subject(n.stream, partition),
            blob or b"",
            timeout=30,
            headers={"Edgeml-Command": json.dumps(command)},
        )
    except nats.errors.NoRespondersError:
        raise TransportError(
            f"nats: no node owns partition {partition} now (see `edgeml status --cluster`)"
        ) from None
    except nats.errors.TimeoutError:
        raise TransportError(f"nats: the owner of partition {partition} did not answer") from None
    finally:
        await nc.close()
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


def checkpoint_key(partition: int) -> str:
    """The KV key of a partition's checkpoint: every reading up to it is in a snapshot."""
    return f"{partition}.checkpoint"


async def kv_get(kv: KeyValue, key: str) -> tuple[int, bytes] | None:
    """(revision, value) of a key, None when it has none."""
    try:
        entry = await kv.get(key)
    except js_errors.KeyNotFoundError:
        return None
    return entry.revision or 0, entry.value or b""


async def kv_put(kv: KeyValue, key: str, value: bytes, last: int) -> int:
    """Write `value` only if the key's revision is still `last` (0: it has none); the new
    revision. Conflict when another writer came first.
    """
    try:
        if last:
            return await kv.update(key, value, last=last)
        return await kv.create(key, value)
    except js_errors.KeyWrongLastSequenceError as exc:
        raise Conflict(key) from exc
    except js_errors.APIError as exc:
        if exc.err_code in (10071, 10164):
            raise Conflict(key) from exc
        raise


async def buckets(js: Any, n: NatsConfig, history: int = 8) -> tuple[KeyValue, KeyValue]:
    """The lease and snapshot buckets (created when missing): leases expire `lease_ttl`
    after their last renewal; snapshots keep `history` revisions per key.
    """
    # In memory: a lease lives seconds, and its renewals must not queue behind snapshots.
    leases = await js.create_key_value(
        bucket=n.lease_bucket,
        ttl=n.lease_ttl_s,
        history=1,
        replicas=n.replicas,
        storage=api.StorageType.MEMORY,
    )
    snapshots = await js.create_key_value(
        bucket=n.snapshot_bucket, history=history, replicas=n.replicas, max_value_size=-1
    )
    return leases, snapshots


async def open_buckets(js: Any, n: NatsConfig) -> tuple[KeyValue, KeyValue]:
    """The lease and snapshot buckets `edgeml cluster init` made; TransportError if not."""
    try:
        return await js.key_value(n.lease_bucket), await js.key_value(n.snapshot_bucket)
    except js_errors.BucketNotFoundError:
        raise TransportError(
            f"nats: bucket {n.lease_bucket} or {n.snapshot_bucket} missing: "
            "run `edgeml cluster init` first"
        ) from None


async def streams(js: Any, n: NatsConfig, topic_prefix: str) -> None:
    """The input stream (limits retention, one subject per partition: a 2.9 consumer filter
    must be one of them) and the output stream that dedupes by Nats-Msg-Id.
    """
    await js.add_stream(
        name=n.stream,
        subjects=[f"{n.stream}.{p}.>" for p in range(n.partitions)],
        retention=api.RetentionPolicy.LIMITS,
        num_replicas=n.replicas,
    )
    await js.add_stream(
        name=n.output_stream,
        subjects=[f"{topic_prefix.replace('/', '.')}.>"],
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=n.dedup_window_s,
        num_replicas=n.replicas,
    )


async def cluster_view(
    nc: Client, n: NatsConfig
) -> tuple[list[str], dict[int, str], dict[int, int]]:
    """(nodes alive, partition -> owner, partition -> stream sequences between its
    checkpoint and its newest reading), read from the buckets and the stream.
    """
    js = nc.jetstream()
    leases = await js.key_value(n.lease_bucket)
    snapshots = await js.key_value(n.snapshot_bucket)
    try:
        keys = await leases.keys()
    except js_errors.NoKeysError:
        keys = []
    nodes = sorted(k[5:] for k in keys if k.startswith("node."))
    owners = {}
    for k in keys:
        if k.startswith("p."):
            found = await kv_get(leases, k)
            if found is not None:
                owners[int(k[2:])] = found[1].decode()
    behind = {}
    for p in range(n.partitions):
        try:
            newest = (await js.get_last_msg(n.stream, f"{n.stream}.{p}.>")).seq or 0
        except js_errors.NotFoundError:
            continue
        found = await kv_get(snapshots, checkpoint_key(p))
        behind[p] = max(0, newest - (int(json.loads(found[1])["seq"]) if found else 0))
    return nodes, owners, behind
