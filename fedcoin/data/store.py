"""The chain store: one contract (``ChainStore``), two implementations that behave identically
(the same contract tests run on both): ``MemoryChainStore`` for tests and simulations,
``SqliteChainStore`` for nodes. See ``chain_store.py`` for the contract, ``sqlite_store.py`` for
the file format.
"""

from __future__ import annotations

from fedcoin.data.chain_store import ChainStore, MemoryChainStore
from fedcoin.data.sqlite_store import SNAPSHOT_EVERY, STATE_CACHE, SqliteChainStore

__all__ = ["SNAPSHOT_EVERY", "STATE_CACHE", "ChainStore", "MemoryChainStore", "SqliteChainStore"]
