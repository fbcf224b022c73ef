"""IPFS against a real daemon: the FL server adds blobs and puts CIDs on chain; a full node
fetches by CID and checks what it gets."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcoin.application.content import ContentResolver, IpfsClient
from fedcoin.application.fl_server import FLServer
from fedcoin.data.content import ContentStore
from fedcoin.data.tensors import weights_of
from fedcoin.data.tx import ContentRef
from fedcoin.errors import ContentMissing
from tests.application.cluster import Cluster, settled_rounds
from tests.application.test_content_e2e import SIZES, blob_of
from tests.application.test_nodes import fl_config
from tests.ipfs_support import start_daemon


@pytest.fixture(scope="module")
def ipfs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_daemon(tmp_path_factory.mktemp("ipfs"))


async def test_resolver_fetches_by_cid_and_checks_the_hash(ipfs_api: str, tmp_path: Path) -> None:
    client = IpfsClient(ipfs_api, timeout=3)
    blob = b"client weights" * 50
    cid = client.add(blob)
    resolver = ContentResolver(ContentStore(tmp_path / "c"), peers=list, ipfs=client, timeout=3)
    good = ContentRef(hashlib.sha256(blob).digest(), len(blob), cid)
    await resolver.ensure([good])
    assert resolver.get(good.sha256) == blob
    # a CID whose bytes do not match the reference is not accepted
    liar = ContentRef(hashlib.sha256(b"something else").digest(), len(blob), cid)
    with pytest.raises(ContentMissing):
        await resolver.ensure([liar])
    assert resolver.get(liar.sha256) is None
    # a CID the daemon does not have times out instead of hanging
    absent = ContentRef(
        b"\x01" * 32, 10, "bafkreie5ls4bl3ri2y7jkrwn6krgbvfibvjpoyh2x7kpeqeszt2ud6d5ve"
    )
    with pytest.raises(ContentMissing):
        await resolver.ensure([absent])
    await resolver.close()


async def test_fl_round_with_ipfs(ipfs_api: str, tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        node = await cluster.start(0, ipfs_api=ipfs_api)
        config = fl_config(node.url, rounds=1, clients=3, noisy=0)
        config.ipfs_api = ipfs_api
        server = FLServer(config)
        (report,) = await server.run()
        assert not report.voided
        task = node.chain.head_state().tasks[server.task_id]
        (settled,) = [p for _, p in settled_rounds(node)]
        assert settled.round == 1 and not settled.voided
        refs = [task.spec.model, task.spec.validation, task.global_model]
        assert all(ref.cid for ref in refs)
        # what IPFS holds under each CID is exactly the referenced blob
        client = IpfsClient(ipfs_api, timeout=5)
        for ref in refs:
            data = client.cat(ref.cid)
            assert hashlib.sha256(data).digest() == ref.sha256
        assert weights_of(client.cat(task.global_model.cid))


@pytest.mark.parametrize("size", SIZES, ids=["1MiB", "8MiB", "60MB"])
async def test_large_blobs_are_fetched_by_cid(ipfs_api: str, tmp_path: Path, size: int) -> None:
    blob = blob_of(size)
    client = IpfsClient(ipfs_api, timeout=300)
    cid = client.add(blob)
    store = ContentStore(tmp_path / "c")
    resolver = ContentResolver(store, peers=list, ipfs=client, timeout=300)
    ref = ContentRef(hashlib.sha256(blob).digest(), size, cid)
    try:
        await resolver.ensure([ref])
        assert store.resolve(ref) == blob
        # a ref that names the same CID with a smaller size is refused, and nothing is kept
        short = ContentRef(hashlib.sha256(blob[:-1]).digest(), size - 1, cid)
        with pytest.raises(ContentMissing):
            await resolver.ensure([short])
        assert not store.has(short.sha256)
    finally:
        await resolver.close()
        client.close()
