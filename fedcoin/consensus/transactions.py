"""Transaction rules: the checks every transaction passes, then its body's own rules.

Pipeline for one transaction: chain id → signature → nonce → fee → balance → body. The fee
goes to the block's proposer. The caller applies a transaction to a ``Draft``; on any violation
it discards the draft, so a failed transaction changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcoin.consensus.stake import apply_bond, apply_unbond
from fedcoin.consensus.valuation import (
    WorkVerifier,
    apply_fraud_proof,
    apply_share_commit,
    apply_share_reveal,
)
from fedcoin.contract.task import close_task, publish_task, submit_round
from fedcoin.data.genesis import ChainParams
from fedcoin.data.keys import TAG_TX, verify
from fedcoin.data.state import Account, Draft
from fedcoin.data.tx import (
    Bond,
    CloseTask,
    FraudProof,
    PublishTask,
    ShareCommit,
    ShareReveal,
    SubmitRound,
    Transaction,
    Transfer,
    Unbond,
)
from fedcoin.errors import (
    BadSignature,
    FeeTooLow,
    InsufficientBalance,
    InvalidAmount,
    NonceMismatch,
    WrongChain,
)


@dataclass(frozen=True, slots=True)
class TxContext:
    """Where a transaction is applied: the chain and the block that includes it."""

    chain_id: str
    """The chain's id."""
    params: ChainParams
    """The chain's parameters."""
    height: int
    """Height of the including block."""
    timestamp_ms: int
    """Timestamp of the including block."""
    proposer: bytes
    """Address of the including block's proposer; fees go there."""


def apply_transaction(
    draft: Draft,
    tx: Transaction,
    ctx: TxContext,
    checker: WorkVerifier,
    *,
    signature_checked: bool = False,
) -> None:
    """Apply one transaction to ``draft`` or raise the ``TxError``/``ContractError`` it breaks."""
    # The transaction is for this chain
    if tx.chain_id != ctx.chain_id:
        raise WrongChain(expected=ctx.chain_id, got=tx.chain_id)
    tx_id = tx.id
    # The sender signed it
    if not signature_checked and not verify(tx.sender_pubkey, TAG_TX, tx_id, tx.signature):
        raise BadSignature(tx=tx_id)
    sender = tx.sender
    account = draft.account(sender)
    # The nonce is the sender's next nonce
    if tx.nonce != account.nonce:
        raise NonceMismatch(expected=account.nonce, got=tx.nonce)
    # The fee is at least the chain's minimum (a committee's commits and reveals may be free:
    # only members can send them, once per task and attempt, and they carry the PoSap work)
    if tx.fee < ctx.params.min_fee and not isinstance(tx.body, ShareCommit | ShareReveal):
        raise FeeTooLow(fee=tx.fee, min_fee=ctx.params.min_fee)
    # The balance covers the fee
    if account.balance < tx.fee:
        raise InsufficientBalance(balance=account.balance, needed=tx.fee)
    draft.set_account(sender, Account(account.balance - tx.fee, account.nonce + 1))

    body = tx.body
    if isinstance(body, Transfer):
        _transfer(draft, sender, body)
    elif isinstance(body, PublishTask):
        publish_task(draft, tx_id, sender, body.spec, ctx.height, checker, ctx.params)
    elif isinstance(body, SubmitRound):
        submit_round(
            draft,
            tx_id,
            sender,
            body,
            ctx.height,
            ctx.timestamp_ms,
            checker,
            ctx.params,
        )
    elif isinstance(body, CloseTask):
        close_task(draft, sender, body, ctx.height)
    elif isinstance(body, Bond):
        apply_bond(draft, tx.sender_pubkey, body, ctx.height)
    elif isinstance(body, Unbond):
        apply_unbond(draft, tx.sender_pubkey, body, ctx.height, ctx.params)
    elif isinstance(body, ShareCommit):
        apply_share_commit(draft, tx.sender_pubkey, body, ctx.height)
    elif isinstance(body, ShareReveal):
        apply_share_reveal(draft, tx.sender_pubkey, body, ctx.height, checker)
    elif isinstance(body, FraudProof):
        apply_fraud_proof(draft, tx.sender_pubkey, body, ctx.height, ctx.params, checker)
    draft.credit(ctx.proposer, tx.fee)


def _transfer(draft: Draft, sender: bytes, body: Transfer) -> None:
    # The amount is positive
    if body.amount <= 0:
        raise InvalidAmount(amount=body.amount)
    account = draft.account(sender)
    # The balance covers the amount (the fee is already paid)
    if account.balance < body.amount:
        raise InsufficientBalance(balance=account.balance, needed=body.amount)
    draft.set_account(sender, Account(account.balance - body.amount, account.nonce))
    draft.credit(body.to, body.amount)
