"""Ledger import rate against the raw Ed25519 verify rate, measured in the same run.

Commits blocks of signed transfers as a syncing node receives them — bytes off the wire: decode
the block and its commit certificate, verify the certificate, full validation (every signature,
every rule, state root), then store block, certificate and state in a real SQLite file and move
the head — and compares transactions per second with bare ``Ed25519PublicKey.verify`` calls on
the same number of signatures. The ratio is what this benchmark reports: signature checks are
the floor of the cost, so 1.0 would mean everything else is free. Target: ≥ 0.5.

It also measures mempool admission the same way: ``--pending`` transactions from ONE sender,
decoded from wire bytes and admitted one by one (signature, nonce and balance against the
sender's projection), against raw verifies of the same signatures. Admission that replayed the
sender's pending run would be quadratic and fall far below the target of ≥ 0.5.

    python bench/ledger.py [--blocks 8] [--txs 500] [--senders 200] [--pending 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedcoin.application.mempool import Mempool  # noqa: E402
from fedcoin.consensus.chain import Chain  # noqa: E402
from fedcoin.consensus.randao import randao_reveal_for  # noqa: E402
from fedcoin.consensus.stake import randao_secret, randao_tip  # noqa: E402
from fedcoin.data.block import Block  # noqa: E402
from fedcoin.data.genesis import DEFAULT_PARAMS, Genesis, GenesisValidator  # noqa: E402
from fedcoin.data.keys import TAG_TX, PrivateKey  # noqa: E402
from fedcoin.data.state import SvTask, TaskState  # noqa: E402
from fedcoin.data.store import MemoryChainStore, SqliteChainStore  # noqa: E402
from fedcoin.data.tx import SubmitRound, Transaction, Transfer, make_tx  # noqa: E402
from fedcoin.data.vote import TAG_VOTE, CommitCertificate, Vote, VoteType  # noqa: E402

CHAIN_ID = "fedcoin-bench"
Wire = tuple[bytes, bytes]
"""A committed block and its certificate, as a node receives them from a peer."""


class NoRounds:
    """The benchmark carries transfers only; any round or PoSap table here is a bug."""

    def check_task(self, spec: object) -> None:
        raise AssertionError("no tasks in this benchmark")

    def check_round(self, task: TaskState, round_: SubmitRound) -> None:
        raise AssertionError("no rounds in this benchmark")

    def utilities(self, sv: SvTask, task: TaskState, masks: Sequence[int]) -> list[int]:
        raise AssertionError("no PoSap tables in this benchmark")

    def max_utility(self, task: TaskState) -> int:
        raise AssertionError("no PoSap tables in this benchmark")

    def estimate(
        self, sv: SvTask, task: TaskState, schedule: Sequence[int], table: Sequence[int]
    ) -> tuple[int, ...]:
        raise AssertionError("no PoSap tables in this benchmark")


def make_blocks(blocks: int, per_block: int, senders: int) -> tuple[Genesis, list[Wire]]:
    """Committed blocks of transfers by one validator, each with its certificate, as bytes."""
    keys = [PrivateKey.from_seed(hashlib.sha256(b"s%d" % i).digest()) for i in range(senders)]
    validator = PrivateKey.from_seed(hashlib.sha256(b"miner").digest())
    secret = randao_secret(validator)
    genesis = Genesis(
        CHAIN_ID,
        1_700_000_000_000,
        tuple(sorted((k.address, 10**12) for k in keys)),
        DEFAULT_PARAMS,
        (GenesisValidator(validator.public, DEFAULT_PARAMS.min_bond, randao_tip(secret)),),
    )
    chain = Chain(MemoryChainStore(genesis), genesis, NoRounds())
    nonces = [0] * senders
    out = []
    for b in range(blocks):
        txs = []
        for i in range(per_block):
            s = (b * per_block + i) % senders
            to = keys[(s + 1) % senders].address
            txs.append(make_tx(keys[s], CHAIN_ID, nonces[s], Transfer(to, 1 + i), fee=1))
            nonces[s] += 1
        tip = chain.head_state().stakes[validator.public].randao_tip
        block, _ = chain.propose(
            validator.public,
            randao_reveal_for(secret, tip),
            timestamp_ms=chain.head.timestamp_ms + DEFAULT_PARAMS.min_block_interval_ms,
            txs=txs,
        )
        unsigned = Vote(block.height, 0, VoteType.PRECOMMIT, block.hash, validator.public, b"")
        vote = unsigned.with_signature(validator.sign(TAG_VOTE, unsigned.digest(CHAIN_ID)))
        certificate = CommitCertificate.from_votes([vote])
        chain.commit(block, certificate)
        out.append((block.encode(), certificate.encode()))
    return genesis, out


def time_import(genesis: Genesis, wire_blocks: list[Wire], workdir: Path) -> float:
    store = SqliteChainStore(workdir / f"bench-{time.monotonic_ns()}.sqlite", genesis)
    chain = Chain(store, genesis, NoRounds())
    start = time.perf_counter()
    for block, certificate in wire_blocks:
        chain.commit(Block.decode(block), CommitCertificate.decode(certificate))
    elapsed = time.perf_counter() - start
    assert chain.head.height == len(wire_blocks)
    store.close()
    return elapsed


def time_raw_verify(wire_blocks: list[Wire]) -> tuple[float, int]:
    triples = []
    for data, _ in wire_blocks:
        for tx in Block.decode(data).txs:
            triples.append((tx.sender_pubkey, TAG_TX + tx.id, tx.signature))
    start = time.perf_counter()
    for pub, msg, sig in triples:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    return time.perf_counter() - start, len(triples)


def make_pending(count: int) -> tuple[Genesis, list[bytes]]:
    """``count`` signed transfers from one sender, nonces 0..count-1, as wire bytes."""
    sender = PrivateKey.from_seed(hashlib.sha256(b"one sender").digest())
    to = PrivateKey.from_seed(hashlib.sha256(b"recipient").digest()).address
    genesis = Genesis(CHAIN_ID, 1_700_000_000_000, ((sender.address, 10**15),), DEFAULT_PARAMS)
    txs = [make_tx(sender, CHAIN_ID, n, Transfer(to, 1 + n % 7), fee=1) for n in range(count)]
    return genesis, [tx.encode() for tx in txs]


def time_admission(genesis: Genesis, wire_txs: list[bytes]) -> float:
    mempool = Mempool(genesis, NoRounds(), capacity=len(wire_txs), per_sender=len(wire_txs))
    state = genesis.state()
    start = time.perf_counter()
    for data in wire_txs:
        mempool.add(Transaction.decode(data), state, 0, genesis.timestamp_ms)
    elapsed = time.perf_counter() - start
    assert len(mempool) == len(wire_txs)
    return elapsed


def time_raw_verify_txs(wire_txs: list[bytes]) -> float:
    triples = []
    for data in wire_txs:
        tx = Transaction.decode(data)
        triples.append((tx.sender_pubkey, TAG_TX + tx.id, tx.signature))
    start = time.perf_counter()
    for pub, msg, sig in triples:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--txs", type=int, default=500, help="transactions per block")
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--pending", type=int, default=10_000, help="mempool txs of one sender")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    genesis, wire_blocks = make_blocks(args.blocks, args.txs, args.senders)
    total = args.blocks * args.txs
    imports, verifies = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            verify_s, count = time_raw_verify(wire_blocks)
            verifies.append(count / verify_s)
            imports.append(total / time_import(genesis, wire_blocks, Path(tmp)))
    imp, ver = statistics.median(imports), statistics.median(verifies)
    print(f"transactions: {total} in {args.blocks} blocks, {args.senders} senders")
    print(f"raw Ed25519 verify: {ver:,.0f}/s (median of {args.repeat})")
    print(f"ledger commit (decode + certificate + validate + SQLite store): {imp:,.0f} tx/s")
    print(f"ratio import / raw verify: {imp / ver:.2f}  (target >= 0.5)")

    pool_genesis, wire_txs = make_pending(args.pending)
    admits, raw = [], []
    for _ in range(args.repeat):
        raw.append(args.pending / time_raw_verify_txs(wire_txs))
        admits.append(args.pending / time_admission(pool_genesis, wire_txs))
    adm, rv = statistics.median(admits), statistics.median(raw)
    print(f"mempool: {args.pending} pending transactions from one sender")
    print(f"raw Ed25519 verify: {rv:,.0f}/s (median of {args.repeat})")
    print(f"mempool admission (decode + verify + projection): {adm:,.0f} tx/s")
    print(f"ratio admission / raw verify: {adm / rv:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
