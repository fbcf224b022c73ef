"""Block rules (DESIGN §5): ``apply_block`` checks a block against its parent and returns the
post-state; ``build_block`` runs the same execution to make a block. Both are pure: the clock
(``now_ms``), the work verifier and the vote-signature verifier come in as arguments.

Order of checks: header (version, parent, height, time, roots), then the parent's commit
certificate (``LastCommit``) against the parent height's set, this height's ``validators_hash``,
the creator's membership and ``randao_reveal``; then the evidence (slashes), the transactions in
order (PoSap commits, reveals and fraud proofs among them), the end-of-block stake steps
(unbonding releases, the next epoch's set, priorities), the end-of-block PoSap steps (committee
and schedule of new SV tasks, windows, settlements: ``valuation``), and finally
``next_validators_hash`` and the state root. Execution happens on a ``Draft``; any violation
discards it, so an invalid block changes nothing.

Blocks are final once committed, so nothing here weighs or compares chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedcoin.consensus.randao import next_mix, reveal_ok
from fedcoin.consensus.slashing import Slash, apply_evidence
from fedcoin.consensus.stake import end_block_stake
from fedcoin.consensus.transactions import TxContext, apply_transaction
from fedcoin.consensus.validators import (
    ValidatorSet,
    VoteVerifier,
    check_signature,
    verify_commit,
)
from fedcoin.consensus.valuation import WorkVerifier, end_block_valuation, liable
from fedcoin.data.block import (
    BLOCK_VERSION,
    Block,
    BlockHeader,
    evidence_root,
    last_commit_hash,
    tx_root,
)
from fedcoin.data.genesis import Genesis
from fedcoin.data.keys import address_of
from fedcoin.data.state import Draft, Stake, State, powers_hash, powers_of
from fedcoin.data.tx import FraudProof, Transaction
from fedcoin.data.vote import CommitCertificate, DuplicateVoteEvidence
from fedcoin.errors import (
    BadRandaoReveal,
    BadTxInBlock,
    BadVersion,
    BlockTooSoon,
    ContractError,
    EvidenceRootMismatch,
    LastCommitHashMismatch,
    LastCommitMissing,
    NotAValidator,
    PosapError,
    StateRootMismatch,
    StoreError,
    TimestampInFuture,
    TooManyFraudProofs,
    TooManyTxs,
    TxError,
    TxRootMismatch,
    UnknownParent,
    ValidatorsHashMismatch,
    WrongHeight,
)
from fedcoin.incentive.payouts import RoundPayout

__all__ = [
    "Applied",
    "Body",
    "WorkVerifier",
    "apply_block",
    "build_block",
    "check_header",
    "check_last_commit",
    "execute_block",
    "set_at",
]


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of executing a block."""

    state: State
    """The post-state."""
    payouts: tuple[RoundPayout, ...] = ()
    """The rounds settled or voided at the end of the block."""
    slashes: tuple[Slash, ...] = ()
    """What the block's evidence cost each equivocating validator."""


@dataclass(frozen=True, slots=True)
class Body:
    """What a block's creator chooses: everything but the roots the header derives."""

    timestamp_ms: int
    proposer_pubkey: bytes
    randao_reveal: bytes
    txs: Sequence[Transaction] = ()
    evidence: Sequence[DuplicateVoteEvidence] = ()


def set_at(state: State, height: int) -> ValidatorSet | None:
    """The set (membership and power) that decided ``height``, if ``state`` still keeps it."""
    powers = state.powers_at(height)
    return None if powers is None else ValidatorSet.of(powers)


def check_last_commit(
    last_commit: CommitCertificate | None,
    parent: BlockHeader,
    state: State,
    chain: Genesis,
    check: VoteVerifier = check_signature,
) -> None:
    """The block names its parent's commit: > 2/3 of the parent height's power, one round."""
    # Height 1 carries no certificate (genesis has none); every later block carries its parent's
    if parent.height == 0:
        if last_commit is not None:
            raise LastCommitMissing(height=1, reason="genesis has no certificate")
        return
    if last_commit is None:
        raise LastCommitMissing(height=parent.height + 1)
    validators = set_at(state, parent.height)
    if validators is None:
        raise StoreError(f"state keeps no set for height {parent.height}")
    verify_commit(validators, chain.chain_id, parent.height, parent.hash, last_commit, check)


def execute_block(
    state: State,
    parent: BlockHeader,
    chain: Genesis,
    verifier: WorkVerifier,
    body: Body,
    *,
    signatures_checked: bool = False,
    check: VoteVerifier = check_signature,
) -> Applied:
    """Apply a block's body to ``state`` (the parent's post-state); raise the rule it breaks."""
    params = chain.params
    height = parent.height + 1
    creator = body.proposer_pubkey
    # Only a member of the height's validator set creates a block
    if not state.is_validator(creator):
        raise NotAValidator(proposer=creator, height=height)
    stake = state.stakes.get(creator)
    # The reveal is the preimage of the creator's randao tip
    if stake is None or not reveal_ok(body.randao_reveal, stake.randao_tip):
        raise BadRandaoReveal(validator=creator, height=height)
    draft = Draft(state)
    draft.set_stake(creator, replace_tip(stake, body.randao_reveal))
    draft.mix = next_mix(state.mix, body.randao_reveal)
    slashes = apply_evidence(
        draft,
        body.evidence,
        chain_id=chain.chain_id,
        height=height,
        creator=creator,
        params=params,
        check=check,
        set_of=lambda h: set_at(state, h),
    )
    # At most max_block_txs transactions
    if len(body.txs) > params.max_block_txs:
        raise TooManyTxs(count=len(body.txs), max=params.max_block_txs)
    # At most max_fraud_proofs fraud proofs (each costs every node an exact evaluation)
    proofs = sum(isinstance(tx.body, FraudProof) for tx in body.txs)
    if proofs > params.max_fraud_proofs:
        raise TooManyFraudProofs(count=proofs, max=params.max_fraud_proofs)
    proposer = address_of(creator)
    ctx = TxContext(chain.chain_id, params, height, body.timestamp_ms, proposer)
    for index, tx in enumerate(body.txs):
        # Every transaction is valid in order
        try:
            apply_transaction(draft, tx, ctx, verifier, signature_checked=signatures_checked)
        except (TxError, ContractError, PosapError) as exc:
            raise BadTxInBlock(index=index, rule=exc.rule, error=str(exc)) from exc
    if params.block_reward:
        draft.credit(proposer, params.block_reward)
        draft.supply += params.block_reward
    end_block_stake(draft, height, params, liable(draft))
    payouts = end_block_valuation(draft, height, creator, params, verifier)
    return Applied(draft.freeze(), payouts, slashes)


def replace_tip(stake: Stake, reveal: bytes) -> Stake:
    return Stake(stake.bond, reveal, stake.jailed_until)


def check_header(
    header: BlockHeader,
    parent: BlockHeader,
    chain: Genesis,
    block: Block,
    *,
    now_ms: int | None,
) -> None:
    """Header rules that need nothing but the parent header and the body."""
    # The version is supported
    if header.version != BLOCK_VERSION:
        raise BadVersion(version=header.version)
    # The parent is the block it names
    if header.parent != parent.hash:
        raise UnknownParent(parent=header.parent)
    # Height is the parent's plus one
    if header.height != parent.height + 1:
        raise WrongHeight(expected=parent.height + 1, got=header.height)
    # Every block comes at least min_block_interval_ms after its parent (no exemption)
    allowed_from = parent.timestamp_ms + chain.params.min_block_interval_ms
    if header.timestamp_ms < allowed_from:
        raise BlockTooSoon(timestamp_ms=header.timestamp_ms, allowed_from=allowed_from)
    # Not too far ahead of our clock (only for new proposals, not for commits or replays)
    if now_ms is not None and header.timestamp_ms > now_ms + chain.params.future_tolerance_ms:
        raise TimestampInFuture(timestamp_ms=header.timestamp_ms, now_ms=now_ms)
    # tx_root commits to the transactions
    if header.tx_root != tx_root(block.txs):
        raise TxRootMismatch()
    # last_commit_hash commits to the parent's certificate
    if header.last_commit_hash != last_commit_hash(block.last_commit):
        raise LastCommitHashMismatch()
    # evidence_root commits to the evidence
    if header.evidence_root != evidence_root(block.evidence):
        raise EvidenceRootMismatch()


def apply_block(
    state: State,
    block: Block,
    parent: BlockHeader,
    chain: Genesis,
    verifier: WorkVerifier,
    *,
    now_ms: int | None = None,
    signatures_checked: bool = False,
    check: VoteVerifier = check_signature,
) -> Applied:
    """Validate ``block`` on top of ``parent`` (whose post-state is ``state``) and execute it.

    ``now_ms`` is the validator's clock for the future-timestamp rule; pass None when committing
    a decided block or replaying stored ones. ``signatures_checked`` skips transaction signature
    checks that the caller already made (for example when the same transactions passed the
    mempool); ``check`` verifies vote signatures (a node passes its ``SignatureCache``).
    """
    header = block.header
    check_header(header, parent, chain, block, now_ms=now_ms)
    check_last_commit(block.last_commit, parent, state, chain, check)
    # validators_hash names the set that decides this height
    if header.validators_hash != powers_hash(powers_of(state.validators)):
        raise ValidatorsHashMismatch(which="validators_hash")
    body = Body(
        header.timestamp_ms,
        header.proposer_pubkey,
        header.randao_reveal,
        block.txs,
        block.evidence,
    )
    applied = execute_block(
        state, parent, chain, verifier, body, signatures_checked=signatures_checked, check=check
    )
    # next_validators_hash names the set that decides the next height
    if header.next_validators_hash != powers_hash(powers_of(applied.state.validators)):
        raise ValidatorsHashMismatch(which="next_validators_hash")
    # state_root is the hash of the post-state
    if header.state_root != applied.state.root():
        raise StateRootMismatch()
    return applied


def build_block(
    state: State,
    parent: BlockHeader,
    chain: Genesis,
    verifier: WorkVerifier,
    body: Body,
    last_commit: CommitCertificate | None,
    *,
    check: VoteVerifier = check_signature,
) -> tuple[Block, Applied]:
    """Make the block ``body.proposer_pubkey`` proposes on ``parent``; raise if it is invalid.

    Nothing is signed here: the proposer signs a ``Proposal`` naming the block's hash.
    """
    check_last_commit(last_commit, parent, state, chain, check)
    applied = execute_block(state, parent, chain, verifier, body, check=check)
    header = BlockHeader(
        version=BLOCK_VERSION,
        height=parent.height + 1,
        parent=parent.hash,
        timestamp_ms=body.timestamp_ms,
        proposer_pubkey=body.proposer_pubkey,
        tx_root=tx_root(body.txs),
        state_root=applied.state.root(),
        validators_hash=powers_hash(powers_of(state.validators)),
        next_validators_hash=powers_hash(powers_of(applied.state.validators)),
        randao_reveal=body.randao_reveal,
        last_commit_hash=last_commit_hash(last_commit),
        evidence_root=evidence_root(body.evidence),
    )
    block = Block(header, tuple(body.txs), last_commit, tuple(body.evidence))
    # The header rules hold too (time after the parent, roots)
    check_header(header, parent, chain, block, now_ms=None)
    return block, applied
