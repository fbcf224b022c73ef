"""Conservation of coins: after every block of a random history, supply = held = genesis +
minted, whatever mix of valid and invalid transactions the history tried."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedcoin.data.block import PosapSection
from fedcoin.data.genesis import DEFAULT_PARAMS
from fedcoin.data.state import TaskStatus
from fedcoin.errors import RuleViolation
from tests.helpers import (
    ALICE,
    BOB,
    CAROL,
    FC,
    MINER,
    MINER2,
    MINER3,
    SERVER,
    ChainBuilder,
    equivocation,
    make_close,
    make_genesis,
    make_publish,
    make_share,
    make_submit,
    make_transfer,
)

PEOPLE = [ALICE, BOB, CAROL, SERVER]
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
        st.tuples(
            st.just("settle"),
            st.lists(st.integers(-(10**6), 10**6), min_size=4, max_size=4),
            st.integers(0, 2),
        ),
        st.tuples(st.just("void")),
        st.tuples(st.just("close")),
        st.tuples(st.just("equivocate"), st.integers(0, 2), st.integers(0, 3)),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(actions, st.integers(0, 3))
def test_supply_is_conserved_after_every_block(history: list[tuple], reward: int) -> None:
    genesis = make_genesis(params=replace(DEFAULT_PARAMS, block_reward=reward))
    chain = ChainBuilder(genesis)
    nonces = dict.fromkeys((p.address for p in PEOPLE), 0)
    tasks: list[bytes] = []
    minted = burned = 0
    for action in history:
        kind = action[0]
        txs, posap, gap, evidence = [], None, None, []
        queue = chain.state.queue
        if kind == "transfer":
            _, a, b, amount, fee = action
            sender = PEOPLE[a]
            txs = [make_transfer(sender, PEOPLE[b], amount, nonces[sender.address], fee)]
        elif kind == "publish":
            _, a, rounds, price = action
            sender = PEOPLE[a]
            txs = [
                make_publish(sender, nonces[sender.address], rounds=rounds, price_per_round=price)
            ]
        elif kind == "round" and tasks:
            task_id = tasks[-1]
            task = chain.state.tasks[task_id]
            txs = [make_submit(task_id, task.rounds_done + 1, nonces[SERVER.address], n=action[1])]
        elif kind == "settle" and queue:
            sv = tuple(action[1][: queue[0].n])
            chain.verifier.true_sv[queue[0].sv_task_id] = sv
            miners = [MINER2, MINER3][: action[2]] or [MINER2]
            posap = PosapSection(
                queue[0].sv_task_id, tuple(make_share(m, queue[0].sv_task_id, sv) for m in miners)
            )
        elif kind == "void" and queue:
            posap = PosapSection(queue[0].sv_task_id, ())
            gap = 10**9
        elif kind == "close" and tasks:
            task = chain.state.tasks[tasks[0]]
            publisher = next(p for p in PEOPLE if p.address == task.publisher)
            txs = [make_close(publisher, tasks[0], nonces[publisher.address])]
        elif kind == "equivocate":
            _, who, back = action
            height = max(chain.header.height - back, 1)
            evidence = [equivocation([MINER2, MINER3, MINER][who], height)]
        try:
            applied = chain.add(txs, posap, gap=gap, evidence=evidence)
        except RuleViolation:
            chain.now -= gap or genesis.params.min_block_interval_ms
            continue
        minted += reward
        burned += sum(slash.amount - slash.reward for slash in applied.slashes)
        label = txs[0].kind_name if txs else ("void" if posap and posap.voids else "settle")
        if evidence:
            label = "evidence"
        elif not txs and posap is None:
            label = "empty"
        event(f"block: {label}")
        for t in txs:
            nonces[t.sender] += 1
            if t.kind_name == "PublishTask":
                tasks.append(t.id)
        state = chain.state
        bonded = sum(v.bond for v in genesis.validators)
        assert state.supply == sum(a for _, a in genesis.allocations) + bonded + minted - burned
        assert state.total_held() == state.supply
        for task in state.tasks.values():
            if task.status == TaskStatus.CLOSED:
                assert task.escrow == 0
            assert task.escrow <= task.spec.escrow
