"""Conservation of coins: after every block of a random history, supply = held, and supply moves
only by what is minted and what a slash or a false fraud claim burns, whatever mix of valid and
invalid transactions the history tried.

The history values rounds through PoSap v2 (DESIGN §5 "Valuation") on a committee of four:
members commit to the honest table or to a forged one, reveal or stay silent, windows run out,
so rounds settle, retry and void; fraud proofs name settled tables, right or wrong; evidence
slashes equivocators. Windows are the shortest a spec may ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedcoin.consensus.settlement import BPS, PROVER_REWARD_BPS
from fedcoin.consensus.valuation import commit_open, reveal_open, schedule_of
from fedcoin.contract.limits import MIN_COMMIT_BLOCKS, MIN_REVEAL_BLOCKS
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.keys import PrivateKey
from fedcoin.data.state import State, SvTask, TaskStatus
from fedcoin.data.tx import DEFAULT_POSAP, FraudProof, Transaction
from fedcoin.data.vote import DuplicateVoteEvidence
from fedcoin.errors import RuleViolation
from fedcoin.incentive.payouts import RoundPayout
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    FC,
    KEYS,
    MINER,
    MINER2,
    MINER3,
    SERVER,
    ChainBuilder,
    commit_txs,
    equivocation,
    honest_table,
    key,
    make_close,
    make_genesis,
    make_publish,
    make_submit,
    make_transfer,
    reveal_txs,
    tx,
)

PEOPLE = [ALICE, BOB, CAROL, SERVER]
#: The committee; the fourth member never equivocates, so some member can always propose.
COMMITTEE = [MINER, MINER2, MINER3, key("validator-0")]
SHORT = replace(DEFAULT_POSAP, commit_blocks=MIN_COMMIT_BLOCKS, reveal_blocks=MIN_REVEAL_BLOCKS)
members = st.integers(1, 15)  # a non-empty subset of the committee, as a bit mask
commit = st.tuples(st.just("commit"), members, st.integers(0, 15), st.integers(0, 15))
reveal = st.tuples(st.just("reveal"), members)
#: A fraud proof by one of PEOPLE at a position, or (None) where the table is wrong if it is.
fraud = st.tuples(st.just("fraud"), st.integers(0, 3), st.none() | st.integers(0, 15))
actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("transfer"),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, 300 * FC),
            st.integers(0, 5),
        ),
        st.tuples(
            st.just("publish"), st.integers(0, 3), st.integers(1, 3), st.integers(1, 50 * FC)
        ),
        st.tuples(st.just("round"), st.integers(2, 4)),
        # members commit, those of the second mask to a table forged at one position
        commit,
        # the members that committed to the open SV task reveal
        reveal,
        # both: members commit, then (some of) them reveal
        st.tuples(st.just("value"), commit, reveal),
        st.tuples(st.just("value"), commit, reveal),
        fraud,
        fraud,
        st.tuples(st.just("close")),
        st.tuples(st.just("equivocate"), st.integers(0, 2), st.integers(0, 3)),
    ),
    min_size=4,
    max_size=25,
)


def chosen(mask: int) -> list[PrivateKey]:
    return [k for i, k in enumerate(COMMITTEE) if mask >> i & 1]


def staked(state: State) -> int:
    return sum(s.bond for s in state.stakes.values()) + sum(u.amount for u in state.unbonding)


class History:
    """Drives a chain through a random history and checks conservation after every block."""

    def __init__(self, reward: int, price: int) -> None:
        params = replace(DEFAULT_PARAMS, block_reward=reward)
        self.genesis = make_genesis(params=params, validators=COMMITTEE)
        self.chain = ChainBuilder(self.genesis)
        self.tables: dict[tuple[bytes, int, bytes], tuple[int, ...]] = {}
        self.minted = self.burned = 0
        # Every history starts with a round being valued: published, submitted, schedule drawn
        publish = make_publish(ALICE, 0, rounds=3, price_per_round=price, posap=SHORT)
        self.tasks = [publish.id]
        for txs in ([publish], [make_submit(publish.id, 1, 0)], []):
            self.add(txs)

    @property
    def state(self) -> State:
        return self.chain.state

    def nonce(self, k: PrivateKey) -> int:
        return self.state.account(k.address).nonce

    def add(
        self,
        txs: Sequence[Transaction],
        evidence: Sequence[DuplicateVoteEvidence] = (),
        *,
        deposit_burned: int = 0,
        prover_reward: int = 0,
    ) -> bool:
        """One block (refused: False); then check where every coin went."""
        before = self.state
        proposer = KEYS[before.validators[0][0]]  # a member of this height's set
        try:
            applied = self.chain.add(txs, evidence=evidence, proposer=proposer)
        except RuleViolation:
            self.chain.now -= self.genesis.params.min_block_interval_ms
            return False
        state = self.state
        self.minted += self.genesis.params.block_reward
        # What left the stake and was not paid out as a slash reward is burned, and deposits
        rewards = sum(s.reward for s in applied.slashes) + prover_reward
        self.burned += staked(before) - staked(state) - rewards + deposit_burned
        initial = sum(a for _, a in self.genesis.allocations)
        bonded = sum(v.bond for v in self.genesis.validators)
        assert state.supply == initial + bonded + self.minted - self.burned
        assert state.total_held() == state.supply
        check_payouts(before, state, applied.payouts)
        for task in state.tasks.values():
            if task.status == TaskStatus.CLOSED:
                assert task.escrow == 0
            assert task.escrow <= task.spec.escrow
        self.label(before, txs, evidence, applied.payouts)
        return True

    def label(
        self,
        before: State,
        txs: Sequence[Transaction],
        evidence: Sequence[DuplicateVoteEvidence],
        payouts: Sequence[RoundPayout],
    ) -> None:
        event(f"block: {txs[0].kind_name if txs else 'evidence' if evidence else 'empty'}")
        for payout in payouts:
            event("round voided" if payout.voided else "round settled")
        attempts = {sv.sv_task_id: sv.attempt for sv in before.queue}
        if any(sv.attempt > attempts.get(sv.sv_task_id, 0) for sv in self.state.queue):
            event("round retried")

    def open_sv(self, is_open: Callable[[SvTask, int], bool]) -> SvTask | None:
        height = self.chain.header.height + 1
        return next((sv for sv in self.state.queue if is_open(sv, height)), None)

    def wait_for(self, is_open: Callable[[SvTask, int], bool], pending: bool) -> SvTask | None:
        """Empty blocks until an SV task ``is_open``, while one that will be is ``pending``."""
        for _ in range(MIN_COMMIT_BLOCKS + 1):
            if (found := self.open_sv(is_open)) is not None or not pending:
                return found
            self.add([])
        return self.open_sv(is_open)

    def commit(self, who: int, forged: int, position: int) -> None:
        pending = any(sv.mix == bytes(32) for sv in self.state.queue)
        sv = self.wait_for(commit_open, pending)
        if sv is None:
            return
        honest = honest_table(self.chain.verifier, self.state, sv.sv_task_id)
        wrong = list(honest)
        wrong[position % len(wrong)] += 1
        tables: dict[PrivateKey, Sequence[int]] = {}
        for k in chosen(who):
            if sv.committed(k.public) is None:
                tables[k] = tuple(wrong) if k in chosen(forged) else honest
                self.tables[(sv.sv_task_id, sv.attempt, k.public)] = tuple(tables[k])
        self.add(commit_txs(self.state, sv.sv_task_id, tables))

    def reveal(self, who: int) -> None:
        pending = any(sv.commits and sv.mix != bytes(32) for sv in self.state.queue)
        sv = self.wait_for(reveal_open, pending)
        if sv is None:
            return
        tables = {
            k: self.tables[(sv.sv_task_id, sv.attempt, k.public)]
            for k in chosen(who)
            if sv.committed(k.public) is not None and sv.revealed(k.public) is None
        }
        self.add(reveal_txs(self.state, sv.sv_task_id, tables))

    def fraud(self, who: int, position: int | None) -> None:
        """A fraud proof against the oldest settled table: right (the revealers are slashed,
        10 % to the sender) or wrong (the sender's deposit is burned)."""
        if not self.state.settled:
            return
        entry = self.state.settled[0]
        table = entry.sv.table(entry.root)
        assert table is not None
        masks = schedule_of(entry.sv, self.state.tasks[entry.sv.task_id].spec)
        right = [self.chain.verifier.utility(entry.sv.sv_task_id, m) for m in masks]
        if position is None:
            position = next((i for i, u in enumerate(table) if u != right[i]), 0)
        position %= len(table)
        sender = PEOPLE[who]
        proof = tx(sender, self.nonce(sender), FraudProof(entry.sv.sv_task_id, position))
        params = self.genesis.params
        if table[position] == right[position]:
            self.add([proof], deposit_burned=params.fraud_deposit)
            return
        reward = 0
        for pk in entry.revealers:
            cut = self.state.stakes[pk].bond * params.slash_fraud_bps // BPS
            reward += cut * PROVER_REWARD_BPS // BPS
        if self.add([proof], prover_reward=reward):
            event("fraud proven")

    def play(self, action: tuple) -> None:  # type: ignore[type-arg]
        kind = action[0]
        if kind == "transfer":
            _, a, b, amount, fee = action
            self.add([make_transfer(PEOPLE[a], PEOPLE[b], amount, self.nonce(PEOPLE[a]), fee)])
        elif kind == "publish":
            _, a, rounds, price = action
            sender = PEOPLE[a]
            publish = make_publish(
                sender, self.nonce(sender), rounds=rounds, price_per_round=price, posap=SHORT
            )
            if self.add([publish]):
                self.tasks.append(publish.id)
        elif kind == "round":
            tasks = self.state.tasks
            task_id = next(
                (t for t in reversed(self.tasks) if tasks[t].status == TaskStatus.OPEN),
                self.tasks[0],
            )
            done = tasks[task_id].rounds_done
            self.add([make_submit(task_id, done + 1, self.nonce(SERVER), n=action[1])])
        elif kind == "commit":
            self.commit(*action[1:])
        elif kind == "reveal":
            self.reveal(action[1])
        elif kind == "value":
            self.play(action[1])
            self.play(action[2])
        elif kind == "fraud":
            self.fraud(*action[1:])
        elif kind == "close":
            task = self.state.tasks[self.tasks[0]]
            publisher = next(p for p in PEOPLE if p.address == task.publisher)
            self.add([make_close(publisher, self.tasks[0], self.nonce(publisher))])
        elif kind == "equivocate":
            _, who, back = action
            height = max(self.chain.header.height - back, 1)
            self.add([], [equivocation([MINER2, MINER3, MINER][who], height)])


def check_payouts(before: State, after: State, payouts: Sequence[RoundPayout]) -> None:
    """The rounds that left the queue are those paid out, each exactly its price."""
    rounds = {(s.task_id, s.round) for s in before.queue}
    left = rounds - {(s.task_id, s.round) for s in after.queue}
    assert left == {(p.task_id, p.round) for p in payouts}
    for payout in payouts:
        sv = next(s for s in before.queue if (s.task_id, s.round) == (payout.task_id, payout.round))
        assert payout.total == sv.price
        assert all(amount >= 0 for _, amount in (*payout.clients, *payout.miners))


@settings(max_examples=300, deadline=None)
@given(actions, st.integers(0, 3), st.integers(1, 50 * FC))
def test_supply_is_conserved_after_every_block(
    history: list[tuple],  # type: ignore[type-arg]
    reward: int,
    price: int,
) -> None:
    driver = History(reward, price)
    for action in history:
        driver.play(action)
