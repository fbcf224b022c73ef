"""The valuation worker's decisions on a real chain, step by step, without sockets: when it
commits, that it never submits twice while one is pending, when it reveals (with the table, or
only the root once the table is recorded), and that a retried SV task is committed again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace

from fedcoin.application.mempool import Mempool
from fedcoin.application.miner import Miner, share_salt
from fedcoin.consensus.chain import Chain
from fedcoin.consensus.table import share_commitment, table_root
from fedcoin.consensus.valuation import reveal_open, schedule_of
from fedcoin.data.genesis import DEFAULT_PARAMS, ChainParams
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import SvTask
from fedcoin.data.tx import DEFAULT_POSAP, ContentRef, ShareCommit, ShareReveal, Transaction
from tests.helpers import (
    ALICE,
    MINER,
    MINER2,
    MINER3,
    SERVER,
    T0,
    TableVerifier,
    commit_next,
    commit_txs,
    honest_table,
    make_chain,
    make_genesis,
    make_publish,
    make_submit,
    reveal_txs,
)
from tests.helpers import tx as signed

POSAP = replace(DEFAULT_POSAP, commit_blocks=4, reveal_blocks=2)


class Here:
    """Every blob is local."""

    async def ensure(self, refs: Iterable[ContentRef]) -> None:
        return None


class Node:
    """A chain, its mempool and the worker of validator MINER, one of three equal members."""

    def __init__(self, params: ChainParams = DEFAULT_PARAMS, proposer: PrivateKey = MINER) -> None:
        self.proposer = proposer
        genesis = make_genesis(params=params, validators=[MINER, MINER2, MINER3])
        self.chain: Chain = make_chain(genesis)
        self.verifier: TableVerifier = self.chain.verifier  # type: ignore[assignment]
        self.mempool = Mempool(genesis, self.verifier, follows=self.chain.head.hash)
        self.submitted: list[Transaction] = []
        self.miner = Miner(
            MINER, self.chain, self.verifier, Here(), self.mempool, self.submit, asyncio.Event()
        )

    async def submit(self, tx: Transaction) -> None:
        self.mempool.add(tx, self.chain.head_state(), self.chain.head.height, T0)
        self.submitted.append(tx)

    def block(self, txs: list[Transaction] | None = None) -> None:
        """Commit the next block with ``txs`` (default: the mempool's), as the node would."""
        chosen = self.mempool.select(100) if txs is None else txs
        commit_next(self.chain, self.proposer, chosen)
        head = self.chain.head
        self.mempool.refresh(self.chain.head_state(), head.height, T0, head=head.hash)

    def sv(self) -> SvTask:
        (sv,) = self.chain.head_state().queue
        return sv


async def test_the_worker_commits_once_reveals_after_the_window_and_commits_again_on_retry():
    node = Node()
    publish = make_publish(ALICE, 0, posap=POSAP)
    node.block([publish])
    node.block([make_submit(publish.id, 1, 0)])  # block q opens the SV task
    # Before block q+1 the schedule is unknown: nothing to do
    await node.miner.step()
    assert node.submitted == []
    node.block([])  # block q+1: its mix seeds the schedule
    sv = node.sv()
    task = node.chain.head_state().tasks[sv.task_id]
    table = tuple(node.verifier.utilities(sv, task, schedule_of(sv, task.spec)))
    root = table_root(sv.sv_task_id, table)

    # Commit: one ShareCommit binding the key, the table's root and the key's salt ...
    await node.miner.step()
    await node.miner.step()  # ... and not a second one while the first is pending
    (commit,) = node.submitted
    salt = share_salt(MINER, sv.sv_task_id, 0)
    assert commit.body == ShareCommit(
        sv.sv_task_id, share_commitment(sv.sv_task_id, MINER.public, root, salt)
    )
    node.block()
    assert node.sv().committed(MINER.public) == commit.body.commitment
    await node.miner.step()
    assert len(node.submitted) == 1  # committed: nothing more until the reveal window

    # Reveal once the window opens (the other members never commit: it runs its length)
    while not reveal_open(node.sv(), node.chain.head.height + 1):
        await node.miner.step()
        assert len(node.submitted) == 1
        node.block([])
    await node.miner.step()
    reveal = node.submitted[-1]
    assert reveal.body == ShareReveal(sv.sv_task_id, salt, root, table)
    assert reveal.nonce == commit.nonce + 1

    # One member of three is not more than a third of the power: the task is retried, and the
    # worker commits again for attempt 1 (with that attempt's salt)
    node.block()
    assert node.sv().attempt == 1
    await node.miner.step()
    retry = node.submitted[-1]
    salt1 = share_salt(MINER, sv.sv_task_id, 1)
    assert salt1 != salt
    assert retry.body == ShareCommit(
        sv.sv_task_id, share_commitment(sv.sv_task_id, MINER.public, root, salt1)
    )
    # The table was computed once for both attempts
    assert node.miner.tables.computed == 1


async def test_a_reveal_names_only_the_root_when_its_table_is_recorded():
    node = Node()
    publish = make_publish(ALICE, 0, posap=POSAP)
    node.block([publish])
    node.block([make_submit(publish.id, 1, 0)])
    node.block([])
    state = node.chain.head_state()
    sv = node.sv()
    honest = {MINER2: honest_table(node.verifier, state, sv.sv_task_id)}
    # MINER2 commits beside this node's worker, then reveals first: its reveal carries the table
    await node.miner.step()
    node.block([*node.mempool.select(10), *commit_txs(state, sv.sv_task_id, honest)])
    while not reveal_open(node.sv(), node.chain.head.height + 1):
        node.block([])
    node.block(reveal_txs(node.chain.head_state(), sv.sv_task_id, honest))
    assert node.sv().table(table_root(sv.sv_task_id, honest[MINER2])) is not None
    await node.miner.step()
    reveal = node.submitted[-1]
    assert isinstance(reveal.body, ShareReveal) and reveal.body.table == ()
    node.block()
    # Both revealed one table, backed by 2 of 3 equal powers: the round settles and the worker
    # forgets the SV task
    assert node.chain.head_state().queue == ()
    await node.miner.step()
    assert node.miner.pending == {}


async def test_a_validator_without_coins_commits_for_free_one_with_coins_pays_min_fee():
    for proposer, fee in ((MINER2, 0), (MINER, 10)):  # MINER earns the blocks' fees or not
        node = Node(replace(DEFAULT_PARAMS, min_fee=10), proposer)
        publish = signed(ALICE, 0, make_publish(ALICE, 0, posap=POSAP).body, fee=10)
        node.block([publish])
        node.block([signed(SERVER, 0, make_submit(publish.id, 1, 0).body, fee=10)])
        node.block([])  # q+1: the schedule is known
        assert (node.chain.head_state().balance(MINER.address) > 0) == (fee > 0)
        await node.miner.step()
        (commit,) = node.submitted
        assert isinstance(commit.body, ShareCommit) and commit.fee == fee
        node.block()  # valid in a block, free or not
        assert node.sv().committed(MINER.public) is not None
