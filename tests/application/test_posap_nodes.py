"""Proof of Shapley v2 on real nodes (real sockets, SQLite): four validators value a round by one
table — ``ShareCommit``, then ``ShareReveal``, then settlement as the end-of-block step of the
block that closes the reveal window — and the clients are paid. The salt of a commitment is
secret (only the key derives it) and survives a restart (the key file is all it needs)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from fedcoin.application.datasets import load_digits_dataset, make_clients, split_validation
from fedcoin.application.fl_server import FLServer, FLServerConfig
from fedcoin.application.full_node import FullNode
from fedcoin.application.miner import SALT_SIGN_TAG, SALT_TAG, share_salt
from fedcoin.application.training import build_mlp
from fedcoin.consensus.table import SALT_BYTES, share_commitment, table_root
from fedcoin.data import keys, vote
from fedcoin.data.keys import PrivateKey
from fedcoin.data.tx import ShareCommit, ShareReveal, SubmitRound
from tests.application.cluster import (
    CLIENT_KEYS,
    FAST_POSAP,
    MINER_KEYS,
    SERVER_KEY,
    Cluster,
    cluster_genesis,
    settled_rounds,
)
from tests.helpers import FC

pytest.importorskip("keras", reason="tensorflow-cpu is a declared dependency")


def fl_config(node_url: str) -> FLServerConfig:
    train, val = split_validation(load_digits_dataset(), 0.2, seed=0)
    shards = make_clients(train.subset(range(0, 450)), clients=3, noisy=0, seed=0)
    arch, initial = build_mlp(64, 10, hidden=16, seed=0)
    return FLServerConfig(
        key=SERVER_KEY, node_url=node_url, architecture=arch, initial_weights=initial,
        validation=val, shards=shards, client_keys=CLIENT_KEYS[:3], rounds=1,
        price_per_round=10 * FC, epochs=1, posap=FAST_POSAP, settle_timeout=180,
    )  # fmt: skip


async def test_four_validators_commit_reveal_and_settle_a_round_that_pays_the_clients(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, cluster_genesis(MINER_KEYS)) as cluster:
        for i in range(4):
            await cluster.start(i)
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 3 for n in cluster.nodes))
        server = FLServer(fl_config(cluster.nodes[0].url))
        (report,) = await server.run()
        assert not report.voided
        await cluster.wait_until(cluster.same_head)
        node = cluster.nodes[1]  # any node: they all executed the same blocks

        # The round's life, block by block
        commits: dict[bytes, tuple[int, ShareCommit]] = {}
        reveals: dict[bytes, tuple[int, ShareReveal]] = {}
        opened = None
        for height in range(1, node.chain.head.height + 1):
            for tx in node.store.block_at(height).txs:
                if isinstance(tx.body, SubmitRound):
                    opened, sv_task_id = height, tx.id
                elif isinstance(tx.body, ShareCommit):
                    commits[tx.sender_pubkey] = (height, tx.body)
                elif isinstance(tx.body, ShareReveal):
                    reveals[tx.sender_pubkey] = (height, tx.body)
        members = {k.public for k in MINER_KEYS}
        assert opened is not None and set(commits) == set(reveals) == members
        # Commits come after block q+1 (whose mix seeds the schedule), reveals after every commit
        assert min(h for h, _ in commits.values()) >= opened + 2
        assert max(h for h, _ in commits.values()) < min(h for h, _ in reveals.values())
        # One table: every member revealed the same root, and the table travelled in the first
        # block that revealed it (later reveals name only the root)
        roots = {body.root for _, body in reveals.values()}
        assert len(roots) == 1
        first = min(h for h, _ in reveals.values())
        for height, body in reveals.values():
            assert body.table == () or height == first
            if body.table:
                assert table_root(sv_task_id, body.table) == body.root
        assert any(body.table for _, body in reveals.values())

        # Settlement: the end-of-block step of the block with the last reveal (every committer
        # revealed, so the reveal window closed there), paying clients and the four revealers
        ((settled_at, payout),) = settled_rounds(node)
        assert settled_at.height == max(h for h, _ in reveals.values())
        assert not payout.voided and report.block_height == settled_at.height
        assert {a for a, _ in payout.miners} == {k.address for k in MINER_KEYS}
        state = node.chain.head_state()
        for (address, paid), client in zip(payout.clients, CLIENT_KEYS[:3], strict=True):
            assert address == client.address and paid > 0
            assert state.balance(client.address) == paid
        assert state.supply == state.total_held()

        # Each commitment binds the member's key, the root and its salt; the salt revealed is
        # the one its key derives (a restarted node, holding only its key file, derives it too)
        for index, member in enumerate(MINER_KEYS):
            path = tmp_path / f"restarted-{index}.pem"
            member.save(path)
            restarted = PrivateKey.load(path)
            salt = share_salt(restarted, sv_task_id, 0)
            (root,) = roots
            assert reveals[member.public][1].salt == salt
            commitment = share_commitment(sv_task_id, member.public, root, salt)
            assert commits[member.public][1].commitment == commitment


def test_the_salt_is_secret_and_stable(tmp_path: Path) -> None:
    sv_task_id, other = hashlib.sha256(b"sv").digest(), hashlib.sha256(b"sv2").digest()
    alice, bob = PrivateKey.generate(), PrivateKey.generate()
    salt = share_salt(alice, sv_task_id, 0)
    assert len(salt) == SALT_BYTES
    # Stable: the same key (reloaded, as after a restart) derives the same salt
    alice.save(tmp_path / "alice.pem")
    reloaded = PrivateKey.load(tmp_path / "alice.pem")
    assert share_salt(reloaded, sv_task_id, 0) == salt
    # One per member, task and attempt
    assert share_salt(bob, sv_task_id, 0) != salt
    assert share_salt(alice, other, 0) != salt
    assert share_salt(alice, sv_task_id, 1) != salt
    # Secret: nothing public derives it — not the public inputs hashed with the salt tag, and
    # not a signature anyone can see, since no protocol message is signed with the seed's tag
    public_guesses = [
        hashlib.sha256(SALT_TAG + sv_task_id + bytes([0])).digest(),
        hashlib.sha256(SALT_TAG + alice.public + sv_task_id + bytes([0])).digest(),
        hashlib.sha256(alice.public + sv_task_id).digest(),
    ]
    assert salt not in public_guesses
    published_tags = [
        getattr(module, name)
        for module in (keys, vote)
        for name in dir(module)
        if name.startswith("TAG_")
    ]
    assert published_tags and all(not SALT_SIGN_TAG.startswith(t) for t in published_tags)


async def test_a_validator_restarted_between_commit_and_reveal_reveals_what_it_committed(
    tmp_path: Path,
) -> None:
    """Node 3 commits, is stopped before the reveal window opens and started again from its
    data directory and key file: it reveals with the salt it committed with (nothing but its key
    derives it), so the chain accepts the reveal and pays it. The genesis lists a fifth
    validator that never runs, so the commit window stays open to its end."""
    posap = replace(FAST_POSAP, commit_blocks=30, reveal_blocks=30)
    async with Cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.start(i)
        restarting = FullNode(cluster.config(3))
        await restarting.__aenter__()
        first = cluster.nodes[0]
        await cluster.wait_until(lambda: all(len(n.p2p.peers) >= 3 for n in cluster.nodes))
        server = FLServer(replace(fl_config(first.url), posap=posap))
        runner = asyncio.create_task(server.run())
        me = MINER_KEYS[3].public

        def committed() -> bool:
            queue = first.chain.head_state().queue
            return any(sv.committed(me) is not None for sv in queue)

        await cluster.wait_until(committed, timeout=120)
        (sv,) = first.chain.head_state().queue
        assert first.chain.head.height < sv.commit_end  # stopped before it could reveal
        await restarting.__aexit__(None, None, None)
        async with FullNode(cluster.config(3)) as again:
            (report,) = await asyncio.wait_for(runner, 180)
            assert not report.voided
            ((block, payout),) = settled_rounds(first)
            won = next(s for s in first.store.get_state(block.hash).settled)
            assert me in won.revealers and MINER_KEYS[3].address in dict(payout.miners)
            assert again.chain.head.height > sv.commit_end  # it followed the chain again
