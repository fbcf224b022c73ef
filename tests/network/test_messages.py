"""Wire messages: the registry, the envelope, strict decoding."""

from __future__ import annotations

import pytest

from fedcoin.data.encoding import encode
from fedcoin.errors import ProtocolViolation
from fedcoin.network.messages import (
    FRAME_BOUNDS,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    EvidenceMessage,
    GetBlocks,
    Hello,
    Neighbours,
    Peers,
    Ping,
    TxMessage,
    VoteMessage,
    decode_message,
    encode_message,
)
from tests.helpers import ALICE, BOB, equivocation, make_transfer, precommit

SAMPLES = [
    Hello(
        PROTOCOL_VERSION,
        "c",
        b"\x01" * 32,
        b"\x02" * 32,
        "127.0.0.1:1",
        b"\x03" * 32,
        5,
        b"\x04" * 32,
    ),
    Peers(("127.0.0.1:1", "127.0.0.1:2")),
    TxMessage(make_transfer(ALICE, BOB, 1, 0)),
    GetBlocks(7, 64),
    Ping(12),
    VoteMessage(precommit(ALICE, 3, 1, b"\x05" * 32)),
    VoteMessage(precommit(ALICE, 3, 1, None)),
    EvidenceMessage(equivocation(ALICE, 3)),
    Neighbours((ALICE.public, BOB.public)),
    Neighbours(()),
]


def test_registry_numbers_are_unique_and_match_classes() -> None:
    assert len(MESSAGE_TYPES) == len({cls.__name__ for cls in MESSAGE_TYPES.values()})
    for number, cls in MESSAGE_TYPES.items():
        assert cls.TYPE == number


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message) -> None:
    assert decode_message(encode_message(message), 1 << 20) == message


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (encode([PROTOCOL_VERSION, 99, []]), "unknown message type"),
        (encode([PROTOCOL_VERSION + 1, Ping.TYPE, [1]]), "protocol version"),
        (encode([PROTOCOL_VERSION, Ping.TYPE]), "envelope"),
        (encode([PROTOCOL_VERSION, Ping.TYPE, [b"x"]]), "Ping"),
        (b"\x93\x01", "malformed"),
    ],
)
def test_malformed_frames_are_protocol_violations(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolViolation, match=reason):
        decode_message(frame, 1 << 20)


def test_oversized_frame_is_refused_before_decoding() -> None:
    frame = encode_message(Peers(tuple(f"127.0.0.1:{i}" for i in range(60))))
    with pytest.raises(ProtocolViolation, match="exceeds"):
        decode_message(frame, 100)


def test_votes_and_evidence_fit_their_small_frame_bounds() -> None:
    """DESIGN §7: a vote is a few hundred bytes (≤ 512 B); evidence is two votes."""
    largest = VoteMessage(precommit(ALICE, 2**63, 2**31, b"\xff" * 32))
    assert len(encode_message(largest)) <= FRAME_BOUNDS[VoteMessage] == 512
    evidence = EvidenceMessage(equivocation(ALICE, 2**63))
    assert len(encode_message(evidence)) <= FRAME_BOUNDS[EvidenceMessage]
    # A vote frame padded past its bound is refused before it is decoded
    with pytest.raises(ProtocolViolation, match="exceeds"):
        decode_message(encode_message(largest) + bytes(400), 1 << 20)
