"""Which FL tasks a block touches: the rule behind the chain store's task index.

A block touches a task when it publishes it, submits one of its rounds, or settles or voids the
SV task of one of its rounds (a retry pays nothing and is not indexed). Settlement is an
end-of-block step of the state, not a part of the block, so the chain passes in the tasks its
execution settled.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedcoin.data.block import Block
from fedcoin.data.tx import PublishTask, SubmitRound


def task_touches(block: Block, settled: Iterable[bytes] = ()) -> set[bytes]:
    """The tasks a block touches; ``settled``: the tasks whose SV tasks its execution settled."""
    touched = set(settled)
    for tx in block.txs:
        if isinstance(tx.body, PublishTask):
            touched.add(tx.id)
        elif isinstance(tx.body, SubmitRound):
            touched.add(tx.body.task_id)
    return touched
