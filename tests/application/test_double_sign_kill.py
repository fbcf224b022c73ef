"""Double-sign protection across ``kill -9`` of a real ``main.py full`` validator process.

Three validators run in this process, the fourth is ``python main.py full`` with the test hook
``FEDCOIN_TEST_KILL_AFTER_SIGN``: the moment its private validator has persisted a vote (and
before the vote leaves the process), it SIGKILLs itself. It is then restarted on the same data
directory without the hook, rejoins, and votes again. Every vote of that validator that reached
the three others is recorded: no two of them conflict (same height, round and type, different
blocks), and the step the killed process persisted was never signed for another block.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedcoin.data.privval import FilePrivValidator, Step
from fedcoin.data.vote import Vote, VoteType
from tests.application.cluster import MINER_KEYS
from tests.application.test_bft_nodes import FAST, WAIT, Net

REPO = Path(__file__).resolve().parents[2]
VICTIM = MINER_KEYS[3]
STEP_OF = {VoteType.PREVOTE: Step.PREVOTE, VoteType.PRECOMMIT: Step.PRECOMMIT}


def full_node(net: Net, data_dir: Path, *, kill_at: int | None) -> subprocess.Popen[str]:
    t = FAST.timeouts
    env = {k: v for k, v in os.environ.items() if k != "FEDCOIN_TEST_KILL_AFTER_SIGN"}
    if kill_at is not None:
        env["FEDCOIN_TEST_KILL_AFTER_SIGN"] = str(kill_at)
    args = [
        sys.executable, str(REPO / "main.py"), "full", "--data-dir", str(data_dir),
        "--genesis", str(data_dir / "genesis.json"), "--key", str(data_dir / "node.pem"),
        "--listen", "127.0.0.1:0", "--heartbeat-ms", str(FAST.heartbeat_ms),
        "--timeout-propose-ms", str(t.propose_ms), "--timeout-prevote-ms", str(t.prevote_ms),
        "--timeout-precommit-ms", str(t.precommit_ms),
    ]  # fmt: skip
    for address in net.addresses.values():
        args += ["--bootstrap", address]
    return subprocess.Popen(
        args, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
async def test_a_validator_killed_between_signing_and_sending_never_double_signs(
    tmp_path,
) -> None:
    seen: list[Vote] = []
    net = Net(tmp_path)
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    net.genesis.save(victim_dir / "genesis.json")
    VICTIM.save(victim_dir / "node.pem")
    process: subprocess.Popen[str] | None = None
    try:
        for i in range(3):
            node = await net.start(i)
            assert node.consensus is not None
            gossip = node.consensus.gossip
            original = gossip.on_vote

            async def record(vote: Vote, original=original) -> None:  # type: ignore[no-untyped-def]
                if vote.validator == VICTIM.public:
                    seen.append(vote)
                await original(vote)

            gossip.on_vote = record  # type: ignore[method-assign]
        await net.wait_height(2)
        # 1. The victim joins and dies right after persisting its first vote from height 3 on
        process = full_node(net, victim_dir, kill_at=3)
        _, stderr = await _wait_exit(process)
        assert process.returncode == -signal.SIGKILL, stderr[-2000:]
        assert "killing this process after signing" in stderr
        killed = FilePrivValidator(VICTIM, victim_dir / "privval_state.bin").last
        assert killed.height >= 3 and killed.step in (Step.PREVOTE, Step.PRECOMMIT)
        before = len(seen)
        # 2. Restarted without the hook, it rejoins and votes at later heights
        process = full_node(net, victim_dir, kill_at=None)
        await net.notifier.wait_for(
            lambda: any(v.height > killed.height + 1 for v in seen[before:]), WAIT
        )
        # 3. Nothing it ever sent conflicts, and the killed step was not re-signed otherwise
        by_step: dict[tuple[int, int, int], set[bytes | None]] = {}
        for vote in seen:
            by_step.setdefault((vote.height, vote.round, vote.type), set()).add(vote.block_id)
        assert all(len(ids) == 1 for ids in by_step.values()), by_step
        for (height, round_, type_), ids in by_step.items():
            if (height, round_, STEP_OF[VoteType(type_)]) == killed.hrs:
                assert ids == {killed.block_id}
        assert net.agree() >= killed.height
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
        await net.close()


async def _wait_exit(process: subprocess.Popen[str]) -> tuple[str, str]:
    return await asyncio.wait_for(asyncio.to_thread(process.communicate), WAIT)
