"""Genesis files: parsing, clear errors, and the network identity they define."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fedcoin.consensus.proposer import genesis_set
from fedcoin.consensus.stake import validator_set
from fedcoin.data.genesis import Genesis
from fedcoin.errors import GenesisError
from tests.helpers import ALICE, BOB, FC, make_genesis, randao_tip

VALIDATOR = {"pubkey": ALICE.public.hex(), "bond": FC, "randao_tip": randao_tip(ALICE).hex()}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    genesis = make_genesis()
    path = tmp_path / "genesis.json"
    genesis.save(path)
    loaded = Genesis.load(path)
    assert loaded == genesis
    assert loaded.block().hash == genesis.block().hash


def test_identity_commits_to_params_and_allocations() -> None:
    genesis = make_genesis()
    other_fee = replace(genesis, params=replace(genesis.params, min_fee=1))
    other_alloc = make_genesis({ALICE: 1 * FC})
    hashes = {g.block().hash for g in (genesis, other_fee, other_alloc)}
    assert len(hashes) == 3


def test_genesis_state_holds_the_allocations() -> None:
    genesis = make_genesis({ALICE: 7 * FC}, validators=[ALICE, BOB])
    state = genesis.state()
    assert state.balance(ALICE.address) == 7 * FC
    # Bonds are not balances, but they are coins: the supply counts them apart
    assert state.bond_of(ALICE.public) == state.bond_of(BOB.public) == FC
    assert state.supply == 9 * FC == state.total_held()
    # The set of height 1, every priority 0 (CometBFT's genesis set), named by the header
    assert state.validators == tuple(sorted([(ALICE.public, FC, 0), (BOB.public, FC, 0)]))
    assert state.is_validator(BOB.public)
    members = genesis_set([(ALICE.public, FC), (BOB.public, FC)])
    assert validator_set(state.validators) == members
    header = genesis.block().header
    assert header.validators_hash == header.next_validators_hash == members.hash
    # The randao mix starts at the configuration hash, the genesis block's parent
    assert state.mix == header.parent == genesis.config_hash
    assert state.powers_at(1) == ((ALICE.public, FC), (BOB.public, FC))


def test_identity_commits_to_the_validators() -> None:
    one = make_genesis(validators=[ALICE])
    two = make_genesis(validators=[ALICE, BOB])
    assert one.block().hash != two.block().hash


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JSON object"),
        ({"allocations": {}}, "chain_id"),
        ({"chain_id": "x", "allocations": {"nope": 1}}, "not a FedCoin address"),
        ({"chain_id": "x", "allocations": {"fc" + "00" * 20: -1}}, "positive integer"),
        ({"chain_id": "x", "allocations": {"fc" + "00" * 20: 1.5}}, "positive integer"),
        ({"chain_id": "x", "params": {"min_fe": 1}}, "unknown chain params"),
        ({"chain_id": "x", "params": {"min_fee": -1}}, "invalid genesis"),
        ({"chain_id": "x", "extra": 1}, "unknown genesis keys"),
        ({"chain_id": "x", "params": {"max_block_txs": 0}}, "max_block_txs"),
        ({"chain_id": "x"}, "at least one validator"),
        ({"chain_id": "x", "validators": {}}, "must be a list"),
        ({"chain_id": "x", "validators": [VALIDATOR, VALIDATOR]}, "twice"),
        ({"chain_id": "x", "validators": [{**VALIDATOR, "bond": 0}]}, "positive integer"),
        ({"chain_id": "x", "validators": [{**VALIDATOR, "bond": 5}]}, "min_bond"),
        ({"chain_id": "x", "validators": [{**VALIDATOR, "extra": 1}]}, "pubkey, bond"),
        ({"chain_id": "x", "validators": [{**VALIDATOR, "pubkey": "zz"}]}, "genesis validator"),
        ({"chain_id": "x", "validators": [{**VALIDATOR, "randao_tip": "00"}]}, "genesis validator"),
        (
            {"chain_id": "x", "validators": [VALIDATOR], "params": {"max_validators": 0}},
            "max_validators",
        ),
        (
            {"chain_id": "x", "validators": [VALIDATOR], "params": {"epoch_blocks": 0}},
            "epoch_blocks",
        ),
        (
            {"chain_id": "x", "validators": [VALIDATOR], "params": {"jail_blocks": 0}},
            "jail_blocks",
        ),
        (
            {"chain_id": "x", "validators": [VALIDATOR], "params": {"min_bond": 0}},
            "min_bond",
        ),
        (
            {
                "chain_id": "x",
                "validators": [VALIDATOR],
                "params": {"epoch_blocks": 50, "unbonding_blocks": 50},
            },
            "unbonding_blocks must be greater",
        ),
        *(
            ({"chain_id": "x", "validators": [VALIDATOR], "params": {name: value}}, name)
            for name, value in (
                ("fraud_deposit", 0),  # free fraud claims would be free evaluations
                ("slash_fraud_bps", 0),  # a proven-wrong table must cost something
                ("slash_fraud_bps", 10_001),
                ("max_open_sv", 0),
                ("max_open_sv", 257),  # a receipt lists at most 256 rounds
                ("max_fraud_proofs", 0),
                ("max_fraud_proofs", 65),
                ("fraud_blocks", 0),
                ("fraud_blocks", 100),  # not below unbonding_blocks
            )
        ),
    ],
)
def test_invalid_genesis_is_a_clear_error(doc: object, message: str) -> None:
    with pytest.raises(GenesisError, match=message):
        Genesis.from_json(doc)


def test_missing_or_unparsable_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="not found"):
        Genesis.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenesisError, match="cannot read"):
        Genesis.load(bad)
    bad.write_text(json.dumps({"chain_id": "ok", "validators": [VALIDATOR]}))
    assert Genesis.load(bad).chain_id == "ok"
