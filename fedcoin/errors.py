"""FedCoin's one exception hierarchy, shaped by what the caller does next.

- ``DecodeError``: the bytes are not a well-formed object. Drop them; a peer that sent them
  misbehaved.
- ``RuleViolation`` and its families (``TxError``, ``ContractError``, ``BlockError``,
  ``ShareError``): a well-formed object breaks a protocol rule. Reject it; the state is unchanged.
  Each class names one rule: its docstring is the rule, its keyword details say how it broke.
- ``ContentError``: a blob is missing, too large or does not match its hash. Fetch elsewhere.
- ``KeyFileError``, ``GenesisError``, ``StoreError``, ``ConfigError``: local set-up problems a
  person has to fix; the message says what and where.
"""

from __future__ import annotations

from typing import Any


class FedCoinError(Exception):
    """Base of every error FedCoin raises on purpose."""


class DecodeError(FedCoinError):
    """Bytes that are not a canonical, bounded encoding of the expected object."""


class KeyFileError(FedCoinError):
    """A key file that is missing, unreadable, corrupt or not an Ed25519 key."""


class GenesisError(FedCoinError):
    """A genesis file that is missing or invalid."""


class StoreError(FedCoinError):
    """The chain store is missing data it should have, or was asked for something impossible."""


class ConfigError(FedCoinError):
    """A configuration value a person has to fix."""


class ContentError(FedCoinError):
    """A content blob that is missing, oversized or does not match its hash."""


class ContentMissing(ContentError):
    """The blob is not available from any configured source."""


class ContentMismatch(ContentError):
    """The blob's sha256 or size differs from its reference."""


class ContentTooLarge(ContentError):
    """The blob exceeds the configured size cap."""


class RuleViolation(FedCoinError):
    """A protocol rule was broken. Subclasses name the rule in their docstring."""

    def __init__(self, **details: Any) -> None:
        self.details = details
        rule = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        extra = ", ".join(f"{k}={_short(v)}" for k, v in details.items())
        super().__init__(f"{type(self).__name__}: {rule}" + (f" ({extra})" if extra else ""))

    @property
    def rule(self) -> str:
        return type(self).__name__


def _short(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return value.hex()[:16] + ("…" if len(value) > 8 else "")
    return repr(value)


# --- transactions ---------------------------------------------------------------------------
class TxError(RuleViolation):
    """A transaction breaks a rule."""


class WrongChain(TxError):
    """the transaction's chain id must be this chain's"""


class BadSignature(TxError):
    """the signature must verify under the sender's public key"""


class NonceMismatch(TxError):
    """the nonce must be the sender's next nonce"""


class FeeTooLow(TxError):
    """the fee must be at least the chain's minimum fee"""


class InsufficientBalance(TxError):
    """the sender's balance must cover the amount and the fee"""


class InvalidAmount(TxError):
    """the amount must be positive"""


# --- the FL task contract -------------------------------------------------------------------
class ContractError(RuleViolation):
    """A task transaction breaks a contract rule."""


class InvalidTaskSpec(ContractError):
    """the task spec must be well formed"""


class UnknownTask(ContractError):
    """the task must exist"""


class TaskNotOpen(ContractError):
    """the task must be open"""


class NotTaskServer(ContractError):
    """only the task's FL server may submit rounds"""


class NotPublisher(ContractError):
    """only the task's publisher may close it"""


class WrongRound(ContractError):
    """the round must be the task's next round"""


class RoundPending(ContractError):
    """at most two SV tasks of one task may be open: the earlier rounds must settle first"""


class TaskExpired(ContractError):
    """the deadline height has passed"""


class ClientCountOutOfRange(ContractError):
    """the number of client updates must be within the task's min and max clients"""


class DuplicateClient(ContractError):
    """each client may submit one update per round"""


class BadUpdateSignature(ContractError):
    """each update must be signed by its client for this task and round"""


class InvalidUpdate(ContractError):
    """an update's sample count must be positive"""


class TooManySamples(ContractError):
    """an update's sample count must not exceed the task's max_samples"""


class TaskNotClosable(ContractError):
    """a task closes when all rounds are done or its deadline has passed, with no round pending"""


class RoundContentUnavailable(ContractError):
    """the round's weights must be available to the node checking the block"""


class NotFedAvg(ContractError):
    """the global model must be the FedAvg of the updates"""


class DuplicateWeights(ContractError):
    """no two updates of a round may have the same weights.sha256"""


class ClientNotAllowed(ContractError):
    """a consortium task pays only the clients in its allowed_clients"""


# --- blocks ---------------------------------------------------------------------------------
class BlockError(RuleViolation):
    """A block breaks a rule."""


class UnknownParent(BlockError):
    """the parent block must be known"""


class WrongHeight(BlockError):
    """the height must be the parent's height plus one"""


class BadVersion(BlockError):
    """the block version must be supported"""


class TimestampInFuture(BlockError):
    """the timestamp must not be too far ahead of the receiver's clock"""


class BlockTooSoon(BlockError):
    """a transaction-only block must come at least min_block_interval_ms after its parent"""


class TxRootMismatch(BlockError):
    """tx_root must be the Merkle root of the block's transactions"""


class StateRootMismatch(BlockError):
    """state_root must be the hash of the post-state"""


class TooManyTxs(BlockError):
    """a block may carry at most max_block_txs transactions"""


class BadTxInBlock(BlockError):
    """every transaction in a block must be valid"""


# --- PoSap shares ---------------------------------------------------------------------------
class ShareError(RuleViolation):
    """PoSap work cannot be done or checked."""


class ShareContentUnavailable(ShareError):
    """the SV task's content (weights, model, validation set) must be available to evaluate its
    game"""


# --- network --------------------------------------------------------------------------------
class Ignore(FedCoinError):
    """Drop the message quietly: late, duplicate or not useful, but not misbehaviour."""


class Reject(FedCoinError):
    """Drop the message and penalise the peer that sent it: invalid or malformed."""


class ProtocolViolation(Reject):
    """The peer broke the wire protocol (unknown type, bad envelope, message before Hello)."""


class HandshakeRefused(FedCoinError):
    """The peer is on another network or protocol version, or is banned."""

    def __init__(self, message: str, *, routine: bool = False) -> None:
        super().__init__(message)
        self.routine = routine
        """Expected in normal operation (a duplicate or self connection), not worth a warning."""


class NeedsSync(Ignore):
    """The message refers to blocks this node lacks (unknown parent): fetch them from the peer."""


# --- network addresses and frames (issue 9) --------------------------------------------------
class BadAddress(FedCoinError):
    """A peer address that is not a strict ``host:port`` (IP literal or hostname, port 1-65535)."""


class FrameTooLarge(ProtocolViolation):
    """A frame over the bound of its message type (or of the handshake)."""


# --- hardening (issue 9, data layer) ---------------------------------------------------------
class SmallOrderKey(DecodeError):
    """A public key at a point of small order (the identity or a torsion point): it would verify
    forged signatures, so no account, validator, client or node may use it."""


class TooManyObjects(DecodeError):
    """An input whose decoded form would hold more objects, or nest deeper, than its type allows
    (bounds memory before a rule runs)."""


# --- BFT consensus: votes, certificates, evidence, the private validator --------------------
class VoteError(RuleViolation):
    """A vote, a proposal, a commit certificate or a piece of evidence breaks a rule."""


class BadVoteSignature(VoteError):
    """a vote or proposal must be signed by its validator for this chain"""


class UnknownValidator(VoteError):
    """the signer must be a member of the height's validator set"""


class InvalidVote(VoteError):
    """a vote or proposal must be well formed (known type, pol_round in [-1, round))"""


class CertificateMismatch(VoteError):
    """a commit certificate must be for the expected height and block"""


class CertificateNotCanonical(VoteError):
    """a certificate's signatures are sorted by validator key, one per validator"""


class InsufficientPower(VoteError):
    """a certificate needs precommits from more than 2/3 of the set's power"""


class NotEquivocation(VoteError):
    """evidence is two votes of one validator, same height, round and type, different blocks"""


class EvidenceTooOld(VoteError):
    """evidence must be at most evidence_max_age blocks old"""


class InvalidValidatorSet(VoteError):
    """a validator set has distinct members, positive powers and a bounded total power"""


class DoubleSignRefused(FedCoinError):
    """The private validator refuses to sign: it already signed something conflicting."""


class PrivValStateError(FedCoinError):
    """The private validator's state file is unreadable or corrupt: a person must look."""


# --- node hardening: mempool bounds, round content shapes -----------------------------------
class MempoolFull(FedCoinError):
    """The mempool holds as many transactions as it may and the new one does not pay more."""

    def __init__(self, **details: Any) -> None:
        self.details = details
        extra = ", ".join(f"{k}={_short(v)}" for k, v in details.items())
        super().__init__(
            f"{type(self).__name__}: {type(self).__doc__}" + f" ({extra})" * bool(extra)
        )


class StartupError(FedCoinError):
    """A node or network could not start: a port in use, a daemon down, peers unreachable."""


class SenderQueueFull(MempoolFull):
    """The sender has as many pending transactions as one sender may."""


class WrongTensorShapes(ContractError):
    """client updates and the global model must have the task model's tensor shapes and dtypes"""


# --- the exact evaluator (evaluator v1, DESIGN §5) -------------------------------------------
class EvaluatorError(ContractError):
    """A model bundle, update or validation set the exact evaluator cannot take."""


class UnsupportedArchitecture(EvaluatorError):
    """the architecture must be a Keras Sequential JSON with a known input shape"""


class UnsupportedLayer(EvaluatorError):
    """every layer must be one the exact evaluator supports"""


class UnsupportedActivation(EvaluatorError):
    """hidden layers use relu or linear; softmax or a single sigmoid output only on the last"""


class BadLayerConfig(EvaluatorError):
    """every layer's configuration must be well formed and fit its input shape"""


class ModelTooLarge(EvaluatorError):
    """the model must stay within the evaluator's layer, width and parameter limits"""


class WeightShapeMismatch(EvaluatorError):
    """the weights must be float32 tensors with the architecture's shapes, in layer order"""


class WeightOutOfRange(EvaluatorError):
    """every weight must be finite with |rint(w·2^F_w)| <= W_MAX"""


class BadValidationSet(EvaluatorError):
    """the validation set must be float32 inputs of the model's shape and labels it can score"""


class InputOutOfRange(EvaluatorError):
    """every validation input must be finite with |rint(x·2^F_x)| <= X_MAX"""


class AccumulatorBoundExceeded(EvaluatorError):
    """every weight layer's accumulator bound B must stay below 2^62"""


# --- admission of a task (PublishTask content checks, DESIGN §4) -----------------------------
class TaskContentUnavailable(ContractError):
    """the task's model bundle and validation set must be available to the node checking it"""


class UndecodableTaskContent(ContractError):
    """the task's model bundle and validation set must decode"""


class ValidationSetTooLarge(ContractError):
    """the validation set must hold at most MAX_VALIDATION_SAMPLES samples"""


class TaskWorkTooLarge(ContractError):
    """one coalition's evaluation must cost at most MAX_EVALUATION_MACS multiply-accumulates"""


class MinersUnderpaid(ContractError):
    """the miners' share of a round's price must pay MIN_PAY_PER_WORK for the round's work"""


# --- stake (issue 10 step 1: bonded validators) ---------------------------------------------
class StakeError(TxError):
    """A Bond or Unbond transaction breaks a stake rule."""


class InsufficientBond(StakeError):
    """an Unbond may release at most the sender's current bond"""


class ValidatorJailed(StakeError):
    """a jailed validator may bond again only after jail_blocks"""


class MissingRandaoTip(StakeError):
    """a key's first Bond must register a non-zero randao_tip"""


class NotAValidator(BlockError):
    """only a member of the height's validator set may propose a block"""


# --- PoSap v2 pure core (issue 11: common schedule, table, settlement, fraud proofs) ----------
class PosapError(RuleViolation):
    """A PoSap v2 schedule, commitment, reveal or fraud proof breaks a rule."""


class InvalidSchedule(PosapError):
    """a schedule needs 1 to 60 clients, n_exact_max ≤ 10 and a budget from the border to 4 096"""


class InvalidSalt(PosapError):
    """a commitment's salt must be 32 bytes"""


class TableLengthMismatch(PosapError):
    """a revealed table must have exactly one entry per schedule position"""


class TableEntryOutOfRange(PosapError):
    """every entry of a revealed table must be an integer from 0 to the validation size"""


class CommitmentMismatch(PosapError):
    """a reveal must recompute its member's commitment from the key, the root and the salt"""


class RevealFromNonMember(PosapError):
    """only a member of the SV task's committee may reveal a table"""


class UnknownRoot(PosapError):
    """every revealed root must come with its table, and the table must hash to it"""


class FraudPositionOutOfRange(PosapError):
    """a fraud proof must name a position of the schedule"""


# --- finality (issue 10: committed blocks, LastCommit, randao, evidence) --------------------
class ConflictingCommit(BlockError):
    """a height already committed cannot commit another block (committed blocks are final)"""


class LastCommitMissing(BlockError):
    """every block after height 1 carries its parent's commit certificate (and height 1 none)"""


class LastCommitHashMismatch(BlockError):
    """last_commit_hash is the hash of the block's LastCommit"""


class ValidatorsHashMismatch(BlockError):
    """validators_hash and next_validators_hash name this height's and the next height's sets"""


class BadRandaoReveal(BlockError):
    """the randao_reveal must hash to its creator's current randao tip"""


class EvidenceRootMismatch(BlockError):
    """evidence_root is the Merkle root of the block's evidence"""


class TooMuchEvidence(BlockError):
    """a block carries at most MAX_EVIDENCE evidence items"""


class BadEvidence(BlockError):
    """every evidence item proves an equivocation by a member of its height's set"""


class EvidenceAlreadyPunished(BlockError):
    """an equivocation (validator, height) is slashed once"""


class RandaoExhausted(FedCoinError):
    """the registered randao hash chain has no preimage left for this tip"""


# --- PoSap v2 on chain (issue 11: commit, reveal, settle, fraud proofs) ---------------------
class UnknownSvTask(PosapError):
    """a ShareCommit or ShareReveal must name an open SV task"""


class CommitFromNonMember(PosapError):
    """only a member of the SV task's committee may commit to a table"""


class OutsideWindow(PosapError):
    """a ShareCommit must come in its SV task's commit window, a ShareReveal in its reveal
    window"""


class DuplicateCommit(PosapError):
    """a member commits at most once per SV task and attempt"""


class NoCommitment(PosapError):
    """a member reveals only what it committed to in this attempt"""


class DuplicateReveal(PosapError):
    """a member reveals at most once per SV task and attempt"""


class UnknownSettledSv(PosapError):
    """a FraudProof must name an SV task settled within the last fraud_blocks blocks"""


class AlreadyDisproven(PosapError):
    """a settled table is disproven once: later fraud proofs against it are refused"""


class TooManyFraudProofs(PosapError):
    """a block carries at most max_fraud_proofs FraudProof transactions"""


class CommitWindowTooLong(ContractError):
    """a round's work must fit the longest commit window (MAX_COMMIT_BLOCKS at the chain's block
    interval and the reference evaluation rate): lower the budget, the model or the validation
    set"""


class TooManyOpenSv(ContractError):
    """at most max_open_sv SV tasks may be open on the chain (the round waits in the mempool)"""
