"""Transactions and the records they carry: content references, task specs, client updates.

Every field that enters a hash, a signature or a balance is an int or bytes (text travels as
UTF-8). A transaction's id is the hash of its unsigned fields; the sender signs
``fedcoin/tx/v1 || id``. A client signs its update for one task and one round only, so an
update cannot be replayed in another round or task.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Self

from fedcoin.data.encoding import (
    ADDRESS,
    HASH,
    PUBKEY,
    SIGNATURE,
    U8,
    U16,
    U32,
    U64,
    Record,
    decode_raw,
    encode,
    list_of,
    nested,
    sha256,
    text,
    tuple_of,
    wire,
)
from fedcoin.data.keys import TAG_TX, TAG_UPDATE, PrivateKey, address_of, verify
from fedcoin.errors import DecodeError

#: Most clients one round may have: coalitions are 64-bit masks, and exact tables grow as 2^n.
MAX_CLIENTS = 60
ZERO_SIG = bytes(64)
#: Most client keys a consortium task may list in ``allowed_clients``.
MAX_ALLOWED_CLIENTS = 256
#: ``TaskSpec.max_samples`` when a spec does not set it: a round's largest credible claim.
DEFAULT_MAX_SAMPLES = 1_000_000
#: Most entries of one PoSap table: the largest sampling budget (``contract.limits.MAX_BUDGET``),
#: which is above the largest exact table (2^10).
MAX_TABLE_ENTRIES = 4_096


@dataclass(frozen=True, slots=True)
class ContentRef(Record):
    """A blob kept off-chain (weights, model bundle, dataset), named by its hash."""

    sha256: bytes = wire(HASH)
    """sha256 of the blob; whatever is fetched is checked against it."""
    size: int = wire(U64)
    """Size of the blob in bytes."""
    cid: str = wire(text(128))
    """IPFS CID when the blob was added to IPFS, else empty."""


@dataclass(frozen=True, slots=True)
class PosapParams(Record):
    """How a task's rounds are valued by Proof of Shapley (DESIGN §5 "Valuation")."""

    n_exact_max: int = wire(U8)
    """Up to this many clients the common schedule is all 2^n coalitions (exact SV)."""
    budget: int = wire(U32)
    """Coalitions the common schedule holds in sampled mode (more than n_exact_max clients)."""
    commit_blocks: int = wire(U32)
    """Length of the commit window in blocks (it closes early once every member committed)."""
    reveal_blocks: int = wire(U32)
    """Length of the reveal window in blocks (it closes early once every committer revealed)."""


DEFAULT_POSAP = PosapParams(n_exact_max=10, budget=1024, commit_blocks=60, reveal_blocks=20)


@dataclass(frozen=True, slots=True)
class TaskSpec(Record):
    """What a publisher pays for: an FL task of ``rounds`` rounds at ``price_per_round``."""

    name: str = wire(text(64))
    """A human-readable name."""
    model: ContentRef = wire(nested(ContentRef))
    """The model bundle: architecture JSON and initial weights."""
    validation: ContentRef = wire(nested(ContentRef))
    """The validation dataset that defines U(S)."""
    server: bytes = wire(ADDRESS)
    """Address of the FL server, the only one who may submit rounds."""
    rounds: int = wire(U32)
    """How many rounds the task pays for."""
    price_per_round: int = wire(U64)
    """Base units paid out per settled round."""
    split_bps: tuple[int, int, int] = wire(tuple_of(U16, U16, U16))
    """(clients, server, miners) shares of a round's price in basis points; sum 10 000."""
    min_clients: int = wire(U8)
    """Fewest client updates a round may have."""
    max_clients: int = wire(U8)
    """Most client updates a round may have."""
    deadline_height: int = wire(U64)
    """After this height no round may be submitted and the publisher may close the task."""
    posap: PosapParams = wire(nested(PosapParams))
    """Proof-of-Shapley parameters."""
    allowed_clients: tuple[bytes, ...] = field(
        default=(), metadata={"codec": list_of(PUBKEY, MAX_ALLOWED_CLIENTS)}
    )
    """Consortium tasks: the only client keys whose updates a round may carry; empty = open."""
    max_samples: int = field(default=DEFAULT_MAX_SAMPLES, metadata={"codec": U64})
    """The largest sample count one client update may claim (its FedAvg weight before the
    clip at the round's smallest count); at most ``contract.limits.MAX_SAMPLES``."""

    @property
    def escrow(self) -> int:
        return self.rounds * self.price_per_round


@dataclass(frozen=True, slots=True)
class ClientUpdate(Record):
    """One client's trained weights for one round, signed by the client."""

    client_pubkey: bytes = wire(PUBKEY)
    """The client's key; its address is paid."""
    weights: ContentRef = wire(nested(ContentRef))
    """The client's model weights after local training."""
    samples: int = wire(U64)
    """How many training samples the client used (its FedAvg weight)."""
    signature: bytes = wire(SIGNATURE)
    """The client's signature over (task_id, round, weights.sha256, samples)."""

    @property
    def address(self) -> bytes:
        return address_of(self.client_pubkey)

    @staticmethod
    def digest(task_id: bytes, round_: int, weights_sha: bytes, samples: int) -> bytes:
        return sha256(encode([task_id, round_, weights_sha, samples]))

    @classmethod
    def create(
        cls, key: PrivateKey, task_id: bytes, round_: int, weights: ContentRef, samples: int
    ) -> ClientUpdate:
        sig = key.sign(TAG_UPDATE, cls.digest(task_id, round_, weights.sha256, samples))
        return cls(key.public, weights, samples, sig)

    def signature_ok(self, task_id: bytes, round_: int) -> bool:
        digest = self.digest(task_id, round_, self.weights.sha256, self.samples)
        return verify(self.client_pubkey, TAG_UPDATE, digest, self.signature)


@dataclass(frozen=True, slots=True)
class Transfer(Record):
    """Move coins to another address."""

    KIND: ClassVar[int] = 1
    to: bytes = wire(ADDRESS)
    """Recipient address."""
    amount: int = wire(U64)
    """Base units moved; positive."""


@dataclass(frozen=True, slots=True)
class PublishTask(Record):
    """Open an FL task and escrow ``rounds * price_per_round``; the task id is the tx id."""

    KIND: ClassVar[int] = 2
    spec: TaskSpec = wire(nested(TaskSpec))
    """The task."""


@dataclass(frozen=True, slots=True)
class SubmitRound(Record):
    """The FL server's round: the clients' updates and the FedAvg global model."""

    KIND: ClassVar[int] = 3
    task_id: bytes = wire(HASH)
    """The task, i.e. the id of its PublishTask transaction."""
    round: int = wire(U32)
    """1-based round number; must be the task's next."""
    updates: tuple[ClientUpdate, ...] = wire(list_of(nested(ClientUpdate), MAX_CLIENTS))
    """One signed update per client."""
    global_model: ContentRef = wire(nested(ContentRef))
    """FedAvg of the updates' weights, weighted by samples."""


@dataclass(frozen=True, slots=True)
class CloseTask(Record):
    """Close a task and refund what is left of its escrow to the publisher."""

    KIND: ClassVar[int] = 4
    task_id: bytes = wire(HASH)
    """The task to close."""


@dataclass(frozen=True, slots=True)
class Bond(Record):
    """Lock ``amount`` of the sender's balance as stake of the sender's public key (DESIGN §5)."""

    KIND: ClassVar[int] = 5
    amount: int = wire(U64)
    """Base units moved from balance to bond; positive."""
    randao_tip: bytes = wire(HASH)
    """H^K(secret) for the randomness beacon; required on a key's first Bond, else all zero
    to keep the registered tip (a non-zero value replaces it)."""


@dataclass(frozen=True, slots=True)
class Unbond(Record):
    """Start releasing ``amount`` of the sender's bond; it returns after ``unbonding_blocks``."""

    KIND: ClassVar[int] = 6
    amount: int = wire(U64)
    """Base units leaving the bond; positive, at most the bond."""


@dataclass(frozen=True, slots=True)
class ShareCommit(Record):
    """A committee member's commitment to the root of its table for an SV task (DESIGN §5)."""

    KIND: ClassVar[int] = 7
    sv_task_id: bytes = wire(HASH)
    """The SV task."""
    commitment: bytes = wire(HASH)
    """``sha256("fedcoin/posap/commit/v1" ‖ sv_task_id ‖ sender_pubkey ‖ root ‖ salt)``."""


@dataclass(frozen=True, slots=True)
class ShareReveal(Record):
    """A member's reveal of its committed table (DESIGN §5 ``Share``): the salt and the root, with
    the table unless a table with that root is already recorded for the SV task."""

    KIND: ClassVar[int] = 8
    sv_task_id: bytes = wire(HASH)
    """The SV task."""
    salt: bytes = wire(HASH)
    """The 32-byte secret salt of the member's commitment."""
    root: bytes = wire(HASH)
    """The table's root."""
    table: tuple[int, ...] = wire(list_of(U32, MAX_TABLE_ENTRIES))
    """``U(mask)`` in schedule order; empty when the root's table is already recorded."""


@dataclass(frozen=True, slots=True)
class FraudProof(Record):
    """A claim that the settled table of an SV task is wrong at one schedule position; the
    sender escrows the chain's ``fraud_deposit`` (DESIGN §5 step 5)."""

    KIND: ClassVar[int] = 9
    sv_task_id: bytes = wire(HASH)
    """The settled SV task."""
    position: int = wire(U32)
    """The schedule position whose entry the sender claims is wrong."""


TxBody = (
    Transfer
    | PublishTask
    | SubmitRound
    | CloseTask
    | Bond
    | Unbond
    | ShareCommit
    | ShareReveal
    | FraudProof
)
BODY_TYPES: dict[int, type[TxBody]] = {
    t.KIND: t
    for t in (
        Transfer,
        PublishTask,
        SubmitRound,
        CloseTask,
        Bond,
        Unbond,
        ShareCommit,
        ShareReveal,
        FraudProof,
    )
}

_CHAIN_ID = text(64)


@dataclass(frozen=True, slots=True)
class Transaction:
    """A signed transaction: ``[kind, chain_id, sender_pubkey, nonce, fee, body, signature]``."""

    chain_id: str
    """The chain this transaction is for (replay protection across networks)."""
    sender_pubkey: bytes
    """The sender's Ed25519 public key; its address pays."""
    nonce: int
    """Must equal the sender's account nonce."""
    fee: int
    """Paid to the block proposer; at least the chain's min_fee."""
    body: TxBody
    """What the transaction does."""
    signature: bytes = ZERO_SIG
    """Ed25519 signature over ``fedcoin/tx/v1 || id``."""
    _id: bytes = field(default=b"", init=False, repr=False, compare=False)
    """Cache of ``id`` (computed once: ids are looked up many times per transaction)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_id", sha256(encode(self._unsigned())))

    def _unsigned(self) -> list[Any]:
        return [
            self.body.KIND,
            _CHAIN_ID.pack(self.chain_id),
            PUBKEY.pack(self.sender_pubkey),
            U64.pack(self.nonce),
            U64.pack(self.fee),
            self.body.to_wire(),
        ]

    def to_wire(self) -> list[Any]:
        return [*self._unsigned(), SIGNATURE.pack(self.signature)]

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if type(raw) is not list or len(raw) != 7:
            raise DecodeError("Transaction: expected an array of 7 fields")
        kind, chain_id, sender, nonce, fee, body, sig = raw
        body_type = BODY_TYPES.get(kind) if type(kind) is int else None
        if body_type is None:
            raise DecodeError(f"Transaction: unknown kind {kind!r}")
        return cls(
            _CHAIN_ID.unpack(chain_id),
            PUBKEY.unpack(sender),
            U64.unpack(nonce),
            U64.unpack(fee),
            body_type.from_wire(body),
            SIGNATURE.unpack(sig),
        )

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def max_objects(cls) -> int:
        """The most msgpack objects an encoding can hold: 6 fields, the array, the body."""
        return 7 + max(t.max_objects() for t in BODY_TYPES.values())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls.from_wire(decode_raw(data, max_objects=cls.max_objects()))

    @property
    def id(self) -> bytes:
        """The transaction id: the hash of the unsigned fields. A task's id is this."""
        return self._id

    def leaf_hash(self) -> bytes:
        """Hash of the full encoding (signature included): the Merkle leaf."""
        return sha256(self.encode())

    @property
    def sender(self) -> bytes:
        return address_of(self.sender_pubkey)

    @property
    def kind_name(self) -> str:
        return type(self.body).__name__

    def signature_ok(self) -> bool:
        return verify(self.sender_pubkey, TAG_TX, self.id, self.signature)

    def signed(self, key: PrivateKey) -> Transaction:
        unsigned = replace(self, sender_pubkey=key.public, signature=ZERO_SIG)
        return replace(unsigned, signature=key.sign(TAG_TX, unsigned.id))


def make_tx(key: PrivateKey, chain_id: str, nonce: int, body: TxBody, fee: int = 0) -> Transaction:
    """Build and sign a transaction."""
    return Transaction(chain_id, key.public, nonce, fee, body).signed(key)
