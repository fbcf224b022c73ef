"""The private validator never signs two conflicting messages, across restarts and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedcoin.data.keys import PrivateKey
from fedcoin.data.privval import FilePrivValidator, LastSignState, Step
from fedcoin.data.vote import TAG_VOTE, UNSIGNED, Proposal, Vote, VoteType
from fedcoin.errors import DoubleSignRefused, PrivValStateError
from tests.data.privval_signer import BLOCK_X, CHAIN, SEED

REPO = Path(__file__).resolve().parents[2]
KEY = PrivateKey.from_seed(SEED)
BLOCK_Y = b"\x0b" * 32
PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT


def unsigned(height: int, round_: int, type_: VoteType, block: bytes | None) -> Vote:
    return Vote(height, round_, type_, block, KEY.public, UNSIGNED)


def proposal(height: int, round_: int, block: bytes) -> Proposal:
    return Proposal(height, round_, -1, block, KEY.public, UNSIGNED)


def run_until(path: Path, mode: str, expect: str) -> tuple[subprocess.Popen[str], str]:
    """Start the signer process and return once it printed a line starting with ``expect``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.data.privval_signer", str(path), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the child reports (or dies: empty line)
    assert line.startswith(expect), f"child said {line!r}"
    return proc, line


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


# --- the rules -------------------------------------------------------------------------------
def test_signs_in_height_round_step_order(tmp_path: Path) -> None:
    pv = FilePrivValidator(KEY, tmp_path / "state")
    pv.sign_proposal(CHAIN, proposal(1, 0, BLOCK_X))
    pv.sign_vote(CHAIN, unsigned(1, 0, PREVOTE, BLOCK_X))
    pv.sign_vote(CHAIN, unsigned(1, 0, PRECOMMIT, None))
    pv.sign_vote(CHAIN, unsigned(1, 1, PREVOTE, BLOCK_Y))
    vote = pv.sign_vote(CHAIN, unsigned(2, 0, PREVOTE, BLOCK_Y))
    assert vote.signature_ok(CHAIN)
    assert pv.last.hrs == (2, 0, Step.PREVOTE)


def test_refuses_a_conflicting_vote_at_the_same_step(tmp_path: Path) -> None:
    pv = FilePrivValidator(KEY, tmp_path / "state")
    pv.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_X))
    for other in (BLOCK_Y, None):
        with pytest.raises(DoubleSignRefused):
            pv.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, other))


def test_refuses_to_go_back(tmp_path: Path) -> None:
    pv = FilePrivValidator(KEY, tmp_path / "state")
    pv.sign_vote(CHAIN, unsigned(4, 2, PRECOMMIT, BLOCK_X))
    for height, round_, type_ in ((4, 2, PREVOTE), (4, 1, PRECOMMIT), (3, 9, PRECOMMIT)):
        with pytest.raises(DoubleSignRefused):
            pv.sign_vote(CHAIN, unsigned(height, round_, type_, BLOCK_X))
    with pytest.raises(DoubleSignRefused):
        pv.sign_proposal(CHAIN, proposal(4, 2, BLOCK_X))


def test_the_same_message_is_signed_again_identically(tmp_path: Path) -> None:
    pv = FilePrivValidator(KEY, tmp_path / "state")
    first = pv.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_X))
    again = pv.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_X))
    assert first == again


def test_a_conflicting_proposal_is_refused(tmp_path: Path) -> None:
    pv = FilePrivValidator(KEY, tmp_path / "state")
    pv.sign_proposal(CHAIN, proposal(4, 0, BLOCK_X))
    with pytest.raises(DoubleSignRefused):
        pv.sign_proposal(CHAIN, proposal(4, 0, BLOCK_Y))


def test_the_state_is_on_disk_before_the_signature_exists(tmp_path: Path) -> None:
    path = tmp_path / "state"
    seen: list[LastSignState] = []

    class Spy:
        public = KEY.public

        def sign(self, tag: bytes, digest: bytes) -> bytes:
            seen.append(LastSignState.decode(path.read_bytes()))
            return KEY.sign(tag, digest)

    FilePrivValidator(Spy(), path).sign_vote(CHAIN, unsigned(7, 1, PRECOMMIT, BLOCK_Y))
    assert [s.hrs for s in seen] == [(7, 1, Step.PRECOMMIT)]
    assert seen[0].block_id == BLOCK_Y


def test_a_refusal_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state"
    pv = FilePrivValidator(KEY, path)
    pv.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_X))
    before = path.read_bytes()
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_Y))
    assert path.read_bytes() == before
    assert not (tmp_path / "state.tmp").exists()


def test_only_its_own_key_and_vote_types(tmp_path: Path) -> None:
    pv = FilePrivValidator(KEY, tmp_path / "state")
    stranger = PrivateKey.from_seed(b"\x01" * 32)
    with pytest.raises(ValueError):
        pv.sign_vote(CHAIN, Vote(1, 0, PREVOTE, None, stranger.public, UNSIGNED))
    with pytest.raises(ValueError):
        pv.sign_vote(CHAIN, unsigned(1, 0, VoteType.PROPOSAL, None))
    assert not (tmp_path / "state").exists()


def test_a_corrupt_state_file_stops_the_validator(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"\x93garbage")
    with pytest.raises(PrivValStateError):
        FilePrivValidator(KEY, path)
    path.write_bytes(b"\x00" * 5000)
    with pytest.raises(PrivValStateError):
        FilePrivValidator(KEY, path)


def test_a_restart_remembers(tmp_path: Path) -> None:
    path = tmp_path / "state"
    FilePrivValidator(KEY, path).sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_X))
    restarted = FilePrivValidator(KEY, path)
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(CHAIN, unsigned(4, 2, PREVOTE, BLOCK_Y))
    restarted.sign_vote(CHAIN, unsigned(4, 2, PRECOMMIT, BLOCK_X))


# --- kill -9 ---------------------------------------------------------------------------------
def test_killed_after_signing_before_broadcasting_refuses_the_conflicting_vote(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state"
    proc, line = run_until(path, "signed", "signed ")
    kill_9(proc)
    signature = bytes.fromhex(line.split()[1])
    restarted = FilePrivValidator(KEY, path)
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(CHAIN, unsigned(5, 0, PREVOTE, BLOCK_Y))
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(CHAIN, unsigned(5, 0, PREVOTE, None))
    # The vote it had signed may still be sent: it is the same signature
    assert restarted.sign_vote(CHAIN, unsigned(5, 0, PREVOTE, BLOCK_X)).signature == signature


def test_killed_between_persisting_and_signing_refuses_the_conflicting_vote(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state"
    proc, _ = run_until(path, "persisted", "persisted")
    kill_9(proc)
    restarted = FilePrivValidator(KEY, path)
    assert restarted.last.hrs == (5, 0, Step.PREVOTE)
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(CHAIN, unsigned(5, 0, PREVOTE, BLOCK_Y))
    vote = restarted.sign_vote(CHAIN, unsigned(5, 0, PREVOTE, BLOCK_X))
    assert vote.signature == KEY.sign(TAG_VOTE, vote.digest(CHAIN))


def test_killed_at_an_arbitrary_moment_the_state_is_whole_and_current(tmp_path: Path) -> None:
    path = tmp_path / "state"
    proc, _ = run_until(path, "loop", "signed ")
    assert proc.stdout is not None
    last = ""
    for _ in range(30):
        last = proc.stdout.readline()
    kill_9(proc)
    height, type_ = (int(x) for x in last.split()[1:])
    restarted = FilePrivValidator(KEY, path)  # decodes: never a torn write
    assert restarted.last.hrs >= (height, 0, Step.PREVOTE if type_ == 1 else Step.PRECOMMIT)
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(CHAIN, unsigned(height, 0, VoteType(type_), BLOCK_Y))
