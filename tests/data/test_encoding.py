"""Canonical encoding: every encoded type round-trips; hostile bytes are refused."""

from __future__ import annotations

import time
import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcoin.data.block import Block, BlockHeader
from fedcoin.data.curve import is_small_order
from fedcoin.data.encoding import decode_raw, encode
from fedcoin.data.genesis import ChainParams, Genesis
from fedcoin.data.state import Account, SettledSv, State, SvTask, TaskState
from fedcoin.data.tx import (
    MAX_TABLE_ENTRIES,
    ClientUpdate,
    CloseTask,
    ContentRef,
    FraudProof,
    PosapParams,
    PublishTask,
    ShareCommit,
    ShareReveal,
    SubmitRound,
    TaskSpec,
    Transaction,
    Transfer,
)
from fedcoin.data.vote import CommitCertificate, CommitSig, DuplicateVoteEvidence, Vote, VoteType
from fedcoin.errors import DecodeError, TooManyObjects
from fedcoin.incentive.payouts import BlockReceipt, RoundPayout

u8 = st.integers(0, 255)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
h32 = st.binary(min_size=32, max_size=32)
addr = st.binary(min_size=20, max_size=20)
sig = st.binary(min_size=64, max_size=64)
txt = st.text(max_size=20)

content_refs = st.builds(ContentRef, h32, u64, st.text(max_size=40))
posap_params = st.builds(PosapParams, u8, u32, u32, u32)
specs = st.builds(
    TaskSpec,
    txt,
    content_refs,
    content_refs,
    addr,
    u32,
    u64,
    st.tuples(u16, u16, u16),
    u8,
    u8,
    u64,
    posap_params,
)
#: Public keys: any 32 bytes but the small-order points, which the codec refuses.
pubkeys = h32.filter(lambda k: not is_small_order(k))
updates = st.builds(ClientUpdate, pubkeys, content_refs, u64, sig)
share_commits = st.builds(ShareCommit, h32, h32)
share_reveals = st.builds(ShareReveal, h32, h32, h32, st.lists(u32, max_size=8).map(tuple))
fraud_proofs = st.builds(FraudProof, h32, u32)
bodies = st.one_of(
    st.builds(Transfer, addr, u64),
    st.builds(PublishTask, specs),
    st.builds(SubmitRound, h32, u32, st.lists(updates, max_size=3).map(tuple), content_refs),
    st.builds(CloseTask, h32),
    share_commits,
    share_reveals,
    fraud_proofs,
)
transactions = st.builds(Transaction, txt, pubkeys, u64, u64, bodies, sig)
headers = st.builds(BlockHeader, u16, u64, h32, u64, pubkeys, h32, h32, h32, h32, h32, h32, h32)
votes = st.builds(
    Vote, u64, u32, st.sampled_from([VoteType.PREVOTE, VoteType.PRECOMMIT]),
    st.none() | h32, pubkeys, sig,
)  # fmt: skip
certificates = st.builds(
    CommitCertificate, u64, u32, h32, st.lists(st.builds(CommitSig, pubkeys, sig), max_size=4)
    .map(tuple),
)  # fmt: skip
evidence = st.builds(DuplicateVoteEvidence, votes, votes)
blocks = st.builds(
    Block,
    headers,
    st.lists(transactions, max_size=3).map(tuple),
    st.none() | certificates,
    st.lists(evidence, max_size=2).map(tuple),
)
task_states = st.builds(TaskState, specs, addr, u64, u32, u8, content_refs, u64)
#: (key, hash) rows sorted by key, as the state keeps commits and reveals.
keyed = st.dictionaries(pubkeys, h32, max_size=3).map(lambda d: tuple(sorted(d.items())))
sv_tasks = st.builds(
    SvTask, h32, h32, u32, st.lists(updates, max_size=3).map(tuple), content_refs,
    content_refs, u64, u64, u64,
    committee=st.dictionaries(pubkeys, u64, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    mix=h32, attempt=u8, commit_end=u64, reveal_end=u64, commits=keyed, reveals=keyed,
    tables=st.dictionaries(h32, st.lists(u32, max_size=4).map(tuple), max_size=2)
    .map(lambda d: tuple(sorted(d.items()))),
)  # fmt: skip
settled_svs = st.builds(SettledSv, sv_tasks, h32, u64, u8)
states = st.builds(
    State,
    st.dictionaries(addr, st.builds(Account, u64, u64), max_size=4),
    st.dictionaries(h32, task_states, max_size=2),
    st.lists(sv_tasks, max_size=2).map(tuple),
    u64,
    settled=st.lists(settled_svs, max_size=2).map(tuple),
)
params = st.builds(
    ChainParams, u64, u64, u64, u64, u32,
    max_open_sv=u32, fraud_blocks=u32, fraud_deposit=u64, slash_fraud_bps=u32,
    max_fraud_proofs=u32,
)  # fmt: skip
geneses = st.builds(
    Genesis, txt, u64, st.lists(st.tuples(addr, u64), max_size=4).map(tuple), params
)
payouts = st.builds(
    RoundPayout,
    h32,
    u32,
    st.lists(i64, max_size=4).map(tuple),
    st.lists(st.tuples(addr, u64), max_size=4).map(tuple),
    u64,
    st.lists(st.tuples(addr, u64), max_size=4).map(tuple),
    u64,
    u64,
)
receipts = st.builds(BlockReceipt, st.lists(payouts, max_size=3).map(tuple))

ALL = {
    "ContentRef": (ContentRef, content_refs),
    "TaskSpec": (TaskSpec, specs),
    "ClientUpdate": (ClientUpdate, updates),
    "Transaction": (Transaction, transactions),
    "ShareCommit": (ShareCommit, share_commits),
    "ShareReveal": (ShareReveal, share_reveals),
    "FraudProof": (FraudProof, fraud_proofs),
    "BlockHeader": (BlockHeader, headers),
    "Block": (Block, blocks),
    "TaskState": (TaskState, task_states),
    "SvTask": (SvTask, sv_tasks),
    "State": (State, states),
    "Genesis": (Genesis, geneses),
    "RoundPayout": (RoundPayout, payouts),
    "BlockReceipt": (BlockReceipt, receipts),
    "SettledSv": (SettledSv, settled_svs),
}


@pytest.mark.parametrize("name", sorted(ALL))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    cls, strategy = ALL[name]
    obj = data.draw(strategy)
    encoded = obj.encode()
    decoded = cls.decode(encoded)
    assert decoded == obj
    assert decoded.encode() == encoded
    # the type's object bound is a true bound: no valid encoding exceeds it
    if hasattr(cls, "max_objects"):
        assert count_objects(msgpack.unpackb(encoded, raw=True)) <= cls.max_objects()


def count_objects(raw: object) -> int:
    return 1 + sum(count_objects(item) for item in raw) if isinstance(raw, list) else 1


@given(transactions)
@settings(max_examples=50, deadline=None)
def test_truncated_bytes_are_refused(tx: Transaction) -> None:
    encoded = tx.encode()
    for cut in (1, len(encoded) // 2, len(encoded) - 1):
        with pytest.raises(DecodeError):
            Transaction.decode(encoded[:cut])


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb([1, 2.5]),  # float
        msgpack.packb({"a": 1}),  # map
        msgpack.packb(["text"], use_bin_type=True),  # str
        msgpack.packb([None]),  # nil
        msgpack.packb([True]),  # bool
        msgpack.packb(msgpack.ExtType(1, b"x")),  # extension
        b"\xcd\x00\x05",  # uint16 holding 5: non-canonical width
        msgpack.packb([1]) + b"\x00",  # trailing bytes
        b"\xc1",  # never-used byte
    ],
)
def test_decode_refuses_non_canonical_or_foreign_types(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_raw(raw)


def test_decode_refuses_oversized_input() -> None:
    big = encode([b"x" * 2000])
    with pytest.raises(DecodeError, match="exceeds"):
        decode_raw(big, max_bytes=1000)


def test_unknown_transaction_kind_is_refused() -> None:
    raw = encode([99, b"c", bytes(32), 0, 0, [], bytes(64)])
    with pytest.raises(DecodeError, match="unknown kind"):
        Transaction.decode(raw)


def test_a_revealed_table_longer_than_the_largest_schedule_is_refused() -> None:
    longest = ShareReveal(bytes(32), bytes(32), bytes(32), (7,) * MAX_TABLE_ENTRIES)
    assert ShareReveal.decode(longest.encode()) == longest
    raw = longest.to_wire()
    raw[3] = [*raw[3], 7]
    with pytest.raises(DecodeError):
        ShareReveal.decode(encode(raw))


def test_wrong_field_types_are_refused() -> None:
    good = ContentRef(bytes(32), 1, "").to_wire()
    for bad in ([b"short", 1, b""], [bytes(32), -1, b""], [bytes(32), 1], [bytes(32), 1, b"\xff"]):
        with pytest.raises(DecodeError):
            ContentRef.from_wire(bad)
    assert ContentRef.from_wire(good) == ContentRef(bytes(32), 1, "")


def test_encoding_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        ContentRef(bytes(32), -5, "").encode()
    with pytest.raises(ValueError):
        ContentRef(bytes(31), 5, "").encode()


# --- decoding amplification (issue 9) -------------------------------------------------------
def nested_empty_arrays(total: int, per_array: int) -> bytes:
    """About ``total`` bytes of empty arrays (one byte each), in arrays of ``per_array``."""
    items = [b"\x90"] * total
    while len(items) > 1:
        items = [
            array_header(len(chunk)) + b"".join(chunk)
            for chunk in (items[i : i + per_array] for i in range(0, len(items), per_array))
        ]
    return items[0]


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return (b"\xdc" + n.to_bytes(2, "big")) if n < 2**16 else (b"\xdd" + n.to_bytes(4, "big"))


@pytest.mark.parametrize("per_array", [1_000_000, 400])
def test_nested_empty_arrays_are_refused_fast_with_small_memory(per_array: int) -> None:
    bomb = nested_empty_arrays(4 * 1024 * 1024, per_array)
    assert len(bomb) > 4 * 1024 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(DecodeError):
        Transaction.decode(bomb)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Today's decoder builds 4 million lists (~290 MB) first; the bound stops it at ~500.
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_bomb_of_short_arrays_is_stopped_by_the_object_count() -> None:
    with pytest.raises(TooManyObjects):
        Transaction.decode(nested_empty_arrays(100_000, 400))


def test_object_bound_counts_arrays_and_their_items() -> None:
    assert decode_raw(encode([[1, 2], [3]]), max_objects=6) == [[1, 2], [3]]
    with pytest.raises(TooManyObjects):
        decode_raw(encode([[1, 2], [3]]), max_objects=5)
    with pytest.raises(DecodeError):  # one long array of scalars, refused before it is built
        decode_raw(encode(list(range(100))), max_objects=50)


def test_nesting_is_bounded() -> None:
    deep = b"\x91" * 30 + b"\x90"  # 31 arrays, one in another
    with pytest.raises(TooManyObjects, match="deeper"):
        decode_raw(deep)
    assert decode_raw(b"\x91" * 10 + b"\x90", max_depth=11) is not None
    with pytest.raises(TooManyObjects, match="deeper"):
        decode_raw(b"\x91" * 11 + b"\x90", max_depth=11)


def test_a_transaction_is_bounded_by_its_largest_body_a_revealed_table() -> None:
    # A ShareReveal carries up to MAX_TABLE_ENTRIES entries; no other body comes near
    assert MAX_TABLE_ENTRIES < Transaction.max_objects() < MAX_TABLE_ENTRIES + 100
    others = (Transfer, PublishTask, SubmitRound, CloseTask, ShareCommit, FraudProof)
    assert max(body.max_objects() for body in others) < 1_000


#: Every type's decoder bound; a block's is capped at MAX_OBJECTS (the sum of its parts' bounds,
#: MAX_BLOCK_TXS ShareReveals of MAX_TABLE_ENTRIES entries, would be ~41 M objects).
BOUNDED = [
    ContentRef, TaskSpec, ClientUpdate, BlockHeader, Block, RoundPayout, BlockReceipt, SettledSv,
]  # fmt: skip


@pytest.mark.parametrize("cls", BOUNDED)
def test_every_type_bounds_its_objects_below_the_default(cls: type) -> None:
    from fedcoin.data.encoding import MAX_OBJECTS

    assert 1 < cls.max_objects() <= MAX_OBJECTS
