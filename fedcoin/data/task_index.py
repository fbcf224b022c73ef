"""Which FL tasks a block touches: the rule behind the chain store's task index.

A block touches a task when it publishes it, submits one of its rounds, or settles (or voids)
the SV task of one of its rounds. Settlement names only the SV task (the submitting
transaction's id), so the store passes in what it learnt from earlier blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from fedcoin.data.block import Block
from fedcoin.data.tx import PublishTask, SubmitRound


def task_touches(
    block: Block, owner_of: Callable[[bytes], bytes | None]
) -> tuple[set[bytes], dict[bytes, bytes]]:
    """The tasks a block touches, and the SV tasks (round submissions) it adds, with their task.

    ``owner_of`` gives the task of an SV task submitted in an earlier block.
    """
    touched: set[bytes] = set()
    submitted: dict[bytes, bytes] = {}
    for tx in block.txs:
        if isinstance(tx.body, PublishTask):
            touched.add(tx.id)
        elif isinstance(tx.body, SubmitRound):
            touched.add(tx.body.task_id)
            submitted[tx.id] = tx.body.task_id
    if block.posap is not None:
        sv = block.posap.sv_task_id
        owner = submitted.get(sv) or owner_of(sv)
        if owner is not None:
            touched.add(owner)
    return touched, submitted
