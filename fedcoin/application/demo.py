"""A small ledger demo: a genesis, transfers, a published task and its refund, on SQLite.

What ``make run`` shows until the simulation exists: blocks made and re-validated through the
same path a node uses, stored in a real SQLite file, and the coins conserved at every step.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedcoin.consensus.chain import Chain
from fedcoin.consensus.randao import randao_reveal_for
from fedcoin.consensus.stake import randao_secret, randao_tip_of
from fedcoin.consensus.valuation import WorkVerifier
from fedcoin.data.block import Block
from fedcoin.data.genesis import DEFAULT_PARAMS, UNIT, Genesis, GenesisValidator
from fedcoin.data.keys import PrivateKey, format_address
from fedcoin.data.state import SvTask, TaskState
from fedcoin.data.store import SqliteChainStore
from fedcoin.data.tx import (
    DEFAULT_POSAP,
    CloseTask,
    ContentRef,
    PublishTask,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
    make_tx,
)
from fedcoin.data.vote import TAG_VOTE, CommitCertificate, Vote, VoteType
from fedcoin.errors import RoundContentUnavailable, ShareContentUnavailable


class NoContent(WorkVerifier):
    """The demo has no FL content: any round or valuation is refused as unavailable."""

    def check_task(self, spec: TaskSpec) -> int:
        """The demo's task names no real content and never runs a round: taken as it is, with
        no work to pay for."""
        return 0

    def check_round(self, task: TaskState, round_: SubmitRound) -> None:
        raise RoundContentUnavailable(task=round_.task_id)

    def utilities(self, sv: SvTask, task: TaskState, masks: Sequence[int]) -> list[int]:
        raise ShareContentUnavailable(sv_task=sv.sv_task_id)

    def max_utility(self, task: TaskState) -> int:
        raise ShareContentUnavailable(task=task.spec.name)

    def estimate(
        self, sv: SvTask, task: TaskState, schedule: Sequence[int], table: Sequence[int]
    ) -> tuple[int, ...]:
        raise ShareContentUnavailable(sv_task=sv.sv_task_id)


def run_demo(data_dir: Path | None = None, console: Console | None = None) -> int:
    console = console or Console()
    alice, bob, server, miner = (PrivateKey.generate() for _ in range(4))
    chain_id = "fedcoin-demo"
    genesis = Genesis(
        chain_id,
        1_700_000_000_000,
        tuple(sorted([(alice.address, 1_000 * UNIT), (bob.address, 50 * UNIT)])),
        DEFAULT_PARAMS,
        (GenesisValidator(miner.public, DEFAULT_PARAMS.min_bond, randao_tip_of(miner)),),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = (data_dir or Path(tmp)) / "demo-chain.sqlite"
        store = SqliteChainStore(path, genesis)
        chain = Chain(store, genesis, NoContent())
        blob = ContentRef(bytes(32), 1, "")
        spec = TaskSpec(
            "demo", blob, blob, server.address, 2, 5 * UNIT, (7000, 1000, 2000), 1, 4, 3,
            DEFAULT_POSAP,
        )  # fmt: skip
        publish = make_tx(alice, chain_id, 1, PublishTask(spec))
        pay_bob = Transfer(bob.address, 25 * UNIT)
        pay_server = Transfer(server.address, UNIT)
        close = CloseTask(publish.id)
        steps: list[tuple[str, list[Transaction]]] = [
            ("alice pays bob 25 FC (fee 0.001)", [make_tx(alice, chain_id, 0, pay_bob, 1000)]),
            ("alice publishes a 2-round task, 10 FC escrow", [publish]),
            ("bob pays the FL server 1 FC", [make_tx(bob, chain_id, 0, pay_server)]),
            ("deadline passed, no round: alice closes", [make_tx(alice, chain_id, 2, close)]),
        ]  # fmt: skip
        console.print(f"[bold]FedCoin ledger demo[/bold] — SQLite store at {path}")
        table = Table()
        for col in ("h", "block", "alice", "bob", "server", "miner", "escrow"):
            table.add_column(col, justify="left" if col == "block" else "right")
        for label, txs in steps:
            parent = chain.head
            tip = chain.head_state().stakes[miner.public].randao_tip
            block, _ = chain.propose(
                miner.public, randao_reveal_for(randao_secret(miner), tip),
                timestamp_ms=parent.timestamp_ms + DEFAULT_PARAMS.min_block_interval_ms, txs=txs,
            )  # fmt: skip
            # The only validator precommits it: a certificate of the whole power
            unsigned = Vote(block.height, 0, VoteType.PRECOMMIT, block.hash, miner.public, b"")
            vote = unsigned.with_signature(miner.sign(TAG_VOTE, unsigned.digest(chain_id)))
            received = Block.decode(block.encode())  # committed like a peer's block
            chain.commit(received, CommitCertificate.from_votes([vote]))
            after = chain.head_state()
            if after.total_held() != after.supply:
                console.print("[red]conservation violated[/red]")
                return 1
            table.add_row(
                str(chain.head.height),
                label,
                *(f"{after.balance(k.address) / UNIT:g}" for k in (alice, bob, server, miner)),
                f"{sum(t.escrow for t in after.tasks.values()) / UNIT:g}",
            )
        console.print(table)
        console.print(f"alice = {format_address(alice.address)}")
        console.print(
            f"head {chain.head.hash.hex()[:16]} at height {chain.head.height}; "
            f"supply {chain.head_state().supply / UNIT:g} FC, conserved after every block."
        )
        store.close()
    return 0
