"""A deterministic in-memory network of Tendermint machines, for safety and liveness tests.

Virtual time, a seeded RNG for message delays, no sockets and no sleeps. Honest nodes sign
through a real ``FilePrivValidator`` (files under a temporary directory) and relay every message
they receive to every other node once (gossip), so a message sent to some reaches all. Byzantine
nodes run the same machine but equivocate: as proposers they send two different blocks to the
two halves of the network, as voters they send each vote and a conflicting one (nil ↔ a block).
A crashed node drops everything; when it comes back it restarts from its last decided height
with a fresh machine and its persisted private-validator state, and its peers send it what they
hold of its current height (as CometBFT's reactor does for a lagging peer).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedcoin.consensus.evidence import verify_evidence
from fedcoin.consensus.proposer import next_height_set
from fedcoin.consensus.tendermint import Tendermint
from fedcoin.consensus.tendermint_io import (
    Broadcast,
    Commit,
    NewHeight,
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Timeout,
    VoteReceived,
)
from fedcoin.consensus.validators import SignatureCache, ValidatorSet, verify_commit
from fedcoin.data.encoding import sha256
from fedcoin.data.privval import FilePrivValidator
from fedcoin.data.vote import Proposal, Vote
from fedcoin.errors import DoubleSignRefused, FedCoinError
from tests.consensus.bft_helpers import (
    CHAIN,
    KEYS,
    TIMEOUTS,
    is_valid,
    make_set,
    sign_proposal,
    sign_vote,
    value_id,
)

Message = ProposalReceived[bytes] | VoteReceived


@dataclass
class SimNode:
    index: int
    byzantine: bool
    privval: FilePrivValidator | None
    machine: Tendermint[bytes]
    incarnation: int = 0
    crashed: bool = False
    seen: set[bytes] = field(default_factory=set)
    decided: dict[int, bytes] = field(default_factory=dict)


def message_key(message: Message) -> bytes:
    if isinstance(message, VoteReceived):
        return b"v" + message.vote.encode()
    return b"p" + message.proposal.encode()


def message_height(message: Message) -> int:
    if isinstance(message, VoteReceived):
        return message.vote.height
    return message.proposal.height


class SimNetwork:
    def __init__(
        self,
        n: int,
        tmp_path: Path,
        *,
        byzantine: frozenset[int] | set[int] = frozenset(),
        seed: int = 0,
    ) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.now = 0
        self.tmp_path = tmp_path
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self.sets: list[ValidatorSet] = [make_set(n)]  # index h-1: the set of height h
        self.log: dict[int, list[Message]] = {}
        self.evidence_against: set[bytes] = set()
        self.errors: list[FedCoinError] = []
        self.byzantine = set(byzantine)
        self.signatures = SignatureCache()  # one per process, shared by every node
        self.twins: dict[bytes, tuple[bytes, int]] = {}  # block → (its twin, the side shown it)
        self.nodes = [self._make_node(i) for i in range(n)]
        self.decision_times: list[tuple[int, int, int]] = []  # (time, node, height)

    # --- set-up --------------------------------------------------------------------------
    def _make_node(self, i: int) -> SimNode:
        byz = i in self.byzantine
        privval = None if byz else FilePrivValidator(KEYS[i], self.tmp_path / f"pv{i}.state")
        return SimNode(i, byz, privval, self._machine(i))

    def _machine(self, i: int) -> Tendermint[bytes]:
        return Tendermint(
            chain_id=CHAIN,
            me=KEYS[i].public,
            get_value=lambda h, r: b"h%d-r%d-node%d" % (h, r, i),
            valid=is_valid,
            value_id=value_id,
            timeouts=TIMEOUTS,
            check=self.signatures,
        )

    def validators_at(self, height: int) -> ValidatorSet:
        while len(self.sets) < height:
            self.sets.append(next_height_set(self.sets[-1]))
        return self.sets[height - 1]

    def start(self) -> None:
        for node in self.nodes:
            self._push(0, node, NewHeight(1, self.validators_at(1)))

    # --- the event loop ------------------------------------------------------------------
    def _push(self, delay: int, node: SimNode, event: Any) -> None:
        self._seq += 1
        item = (self.now + delay, self._seq, node.index, node.incarnation, event)
        heapq.heappush(self._queue, item)

    def run_until(self, time_ms: int, stop: Any = None) -> None:
        while self._queue and self._queue[0][0] <= time_ms:
            when, _, index, incarnation, event = heapq.heappop(self._queue)
            self.now = when
            node = self.nodes[index]
            if node.crashed or incarnation != node.incarnation:
                continue
            self._deliver(node, event)
            if stop is not None and stop():
                return
        self.now = max(self.now, time_ms)

    def _deliver(self, node: SimNode, event: Any) -> None:
        if isinstance(event, ProposalReceived | VoteReceived):
            key = message_key(event)
            # Honest peers relay what they receive once (gossip); the machine ignores repeats
            if key not in node.seen and not node.byzantine:
                node.seen.add(key)
                for other in self.nodes:
                    if other is not node:
                        self._push(self.rng.randint(1, 30), other, event)
        try:
            actions = node.machine.step(event)
        except FedCoinError as exc:
            self.errors.append(exc)
            return
        for action in actions:
            self._carry_out(node, action)

    def _carry_out(self, node: SimNode, action: Any) -> None:
        if isinstance(action, Broadcast):
            for target, message in self._sign(node, action):
                self.log.setdefault(message_height(message), []).append(message)
                targets = (
                    self.nodes
                    if target is None
                    else [t for t in self.nodes if t.index % 2 == target]
                )
                for other in targets:
                    self._push(0 if other is node else self.rng.randint(1, 30), other, message)
        elif isinstance(action, ScheduleTimeout):
            timeout = Timeout(action.kind, action.height, action.round)
            self._push(action.duration_ms, node, timeout)
        elif isinstance(action, Commit):
            self._commit(node, action)
        elif isinstance(action, ReportEvidence):
            height = action.evidence.height
            verify_evidence(
                action.evidence,
                self.validators_at(height),
                CHAIN,
                current_height=height,
                max_age=10,
            )
            self.evidence_against.add(action.evidence.validator)

    def _sign(self, node: SimNode, action: Broadcast[bytes]) -> list[tuple[int | None, Message]]:
        """Signed messages and who gets them (None: everyone; 0 / 1: even / odd nodes)."""
        message = action.message
        if not node.byzantine:
            assert node.privval is not None
            try:
                if isinstance(message, Vote):
                    return [(None, VoteReceived(node.privval.sign_vote(CHAIN, message)))]
                assert action.value is not None
                signed = node.privval.sign_proposal(CHAIN, message)
                return [(None, ProposalReceived(signed, action.value))]
            except DoubleSignRefused:
                return []
        # Byzantine: one message to the even nodes, a conflicting one to the odd nodes. The
        # equivocators coordinate: a vote for one of their twin blocks goes to the side that
        # was shown that twin, and the other side gets a vote for the other twin.
        if isinstance(message, Vote):
            block = message.block_id
            if block is not None and block in self.twins:
                other, side = self.twins[block]
                mine = replace(message, block_id=block)
                theirs = replace(message, block_id=other)
                pair = (mine, theirs) if side == 0 else (theirs, mine)
            else:
                other_id = sha256(b"evil") if block is None else None
                pair = (message, replace(message, block_id=other_id))
            return [(0, VoteReceived(sign_vote(pair[0]))), (1, VoteReceived(sign_vote(pair[1])))]
        assert isinstance(message, Proposal) and action.value is not None
        evil = action.value + b"-evil"
        twin_p = replace(message, block_id=value_id(evil))
        self.twins[message.block_id] = (twin_p.block_id, 0)
        self.twins[twin_p.block_id] = (message.block_id, 1)
        return [
            (0, ProposalReceived(sign_proposal(message), action.value)),
            (1, ProposalReceived(sign_proposal(twin_p), evil)),
        ]

    def _commit(self, node: SimNode, commit: Commit[bytes]) -> None:
        validators = self.validators_at(commit.height)
        verify_commit(validators, CHAIN, commit.height, value_id(commit.value), commit.certificate)
        node.decided[commit.height] = commit.value
        self.decision_times.append((self.now, node.index, commit.height))
        self._enter_height(node, commit.height + 1)

    def _enter_height(self, node: SimNode, height: int) -> None:
        self._push(0, node, NewHeight(height, self.validators_at(height)))
        # Peers send a node what they hold of its new height (gossip catch-up)
        for message in list(self.log.get(height, ())):
            self._push(self.rng.randint(1, 30), node, message)

    # --- faults --------------------------------------------------------------------------
    def crash(self, index: int) -> None:
        self.nodes[index].crashed = True

    def recover(self, index: int) -> None:
        """Restart: a fresh machine at the next undecided height, the private validator reloaded."""
        node = self.nodes[index]
        node.crashed = False
        node.incarnation += 1
        node.seen = set()
        node.machine = self._machine(index)
        if not node.byzantine:
            node.privval = FilePrivValidator(KEYS[index], self.tmp_path / f"pv{index}.state")
        self._enter_height(node, max(node.decided, default=0) + 1)

    # --- observations --------------------------------------------------------------------
    @property
    def honest(self) -> list[SimNode]:
        return [node for node in self.nodes if not node.byzantine]

    def top_height(self, nodes: list[SimNode] | None = None) -> int:
        return max((max(n.decided, default=0) for n in nodes or self.honest), default=0)

    def all_reached(self, height: int, nodes: list[SimNode]) -> bool:
        return all(height in n.decided for n in nodes)

    def disagrees(self) -> bool:
        """Two honest nodes decided different values at some height (checked cheaply)."""
        first: dict[int, bytes] = {}
        for node in self.honest:
            for h, value in node.decided.items():
                if first.setdefault(h, value) != value:
                    return True
        return False

    def check_agreement(self) -> int:
        """No two honest nodes decided different values at any height; return the heights."""
        heights = set().union(*(n.decided for n in self.honest))
        for h in heights:
            values = {n.decided[h] for n in self.honest if h in n.decided}
            assert len(values) == 1, f"honest nodes disagree at height {h}: {values}"
        return len(heights)
