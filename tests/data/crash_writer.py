"""Helper process for the crash test: writes blocks to a SQLite store and acknowledges each.

Run as ``python -m tests.data.crash_writer DB``; prints ``ok <height>`` after each block is
committed and made the head. The test kills it with SIGKILL at an arbitrary moment.
"""

from __future__ import annotations

import sys

from fedcoin.data.store import SqliteChainStore
from tests.helpers import ALICE, BOB, CAROL, ChainBuilder, make_genesis, make_transfer


def main(path: str) -> None:
    genesis = make_genesis()
    store = SqliteChainStore(path, genesis)
    builder = ChainBuilder(genesis)
    nonce = 0
    while True:
        txs = [make_transfer(ALICE, BOB if i % 2 else CAROL, 1 + i, nonce + i) for i in range(20)]
        nonce += len(txs)
        applied = builder.add(txs)
        store.commit(builder.block, applied.state, builder.certificates[builder.block.height])
        print(f"ok {builder.block.height}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
