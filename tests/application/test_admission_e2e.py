"""Admission of a task on real nodes (issue 11, "Halts and free work"): a hostile PublishTask
is refused over HTTP with its named rule and changes nothing; a block carrying one is refused
by a peer; a task whose validation set was never uploaded never opens; a sound task's model
and validation set are fetched and kept by a second node as soon as the task reaches it."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import numpy as np
import pytest

from fedcoin.data.tensors import encode_bundle, encode_dataset
from fedcoin.data.tx import ContentRef, PublishTask, TaskSpec, make_tx
from fedcoin.errors import Ignore
from tests.application.cluster import FAST_POSAP, PUBLISHER_KEY, SERVER_KEY, Cluster
from tests.application.test_content_e2e import put
from tests.consensus.exact_reference import dense, layer, sequential
from tests.helpers import CHAIN_ID, FC, ChainBuilder

MLP = sequential([8], dense(6, "relu"), dense(3, "softmax"))
RNG = np.random.default_rng(11)
WEIGHTS = [RNG.uniform(-0.5, 0.5, s).astype(np.float32) for s in [(8, 6), (6,), (6, 3), (3,)]]
X, Y = RNG.random((30, 8)).astype(np.float32), RNG.integers(0, 3, 30)
X_NAN = X.copy()
X_NAN[3, 4] = np.nan


def spec_of(model: ContentRef, validation: ContentRef, **overrides: object) -> TaskSpec:
    spec = TaskSpec(
        name="door", model=model, validation=validation, server=SERVER_KEY.address,
        rounds=2, price_per_round=10 * FC, split_bps=(7000, 1000, 2000), min_clients=1,
        max_clients=4, deadline_height=10_000, posap=FAST_POSAP,
    )  # fmt: skip
    return replace(spec, **overrides)  # type: ignore[arg-type]


async def post(http: aiohttp.ClientSession, url: str, spec: TaskSpec) -> tuple[int, dict]:
    tx = make_tx(PUBLISHER_KEY, CHAIN_ID, 0, PublishTask(spec))
    resp = await http.post(f"{url}/tx", data=tx.encode())
    return resp.status, await resp.json()


async def test_hostile_tasks_are_refused_on_real_nodes_and_a_sound_one_is_kept(tmp_path) -> None:
    async with Cluster(tmp_path) as cluster:
        first = await cluster.start(0, mine=False)
        second = await cluster.start(1, mine=False)
        async with aiohttp.ClientSession() as http:
            model = await put(http, first.url, encode_bundle(MLP, WEIGHTS))
            validation = await put(http, first.url, encode_dataset(X, Y))
            batchnorm = sequential([8], layer("BatchNormalization"), dense(3))
            unsupported = await put(http, first.url, encode_bundle(batchnorm, WEIGHTS))
            too_big = await put(http, first.url, encode_bundle(MLP, [w * 0 + 8 for w in WEIGHTS]))
            with_nan = await put(http, first.url, encode_dataset(X_NAN, Y))
            hostile = {
                "InvalidTaskSpec": [
                    spec_of(model, validation, posap=replace(FAST_POSAP, budget=2**32 - 1)),
                    spec_of(model, validation, posap=replace(FAST_POSAP, n_exact_max=11)),
                    # windows that would keep an SV task open for ever, or give no time to value it
                    spec_of(model, validation, posap=replace(FAST_POSAP, commit_blocks=2**32 - 1)),
                    spec_of(model, validation, posap=replace(FAST_POSAP, reveal_blocks=2**32 - 1)),
                    spec_of(model, validation, posap=replace(FAST_POSAP, commit_blocks=0)),
                ],
                "UnsupportedLayer": [spec_of(unsupported, validation)],
                "WeightOutOfRange": [spec_of(too_big, validation)],
                "InputOutOfRange": [spec_of(model, with_nan)],
                "MinersUnderpaid": [spec_of(model, validation, split_bps=(9000, 1000, 0))],
                # a validation set that was never uploaded anywhere
                "ContentMissing": [spec_of(model, ContentRef(bytes(32), 1234, ""))],
            }  # fmt: skip
            for rule, specs in hostile.items():
                for spec in specs:
                    status, body = await post(http, first.url, spec)
                    assert (status, body.get("rule")) == (422, rule), body
            # Nothing changed: no pending transaction, no task, the publisher's nonce unspent
            for node in (first, second):
                assert len(node.mempool) == 0 and node.chain.head_state().tasks == {}
                assert node.chain.head_state().account(PUBLISHER_KEY.address).nonce == 0

            # A proposer that includes such a task anyway: a peer prevotes nil on its block
            # (a rule broken), or ignores the proposal (content it cannot fetch, never judged)
            withheld = spec_of(model, ContentRef(bytes(32), 1234, ""))
            assert second.consensus is not None
            driver = second.consensus.driver
            donor = ChainBuilder(cluster.genesis)  # its stand-in checker accepts any task
            bad, _ = donor.make(
                [make_tx(PUBLISHER_KEY, CHAIN_ID, 0, PublishTask(hostile["UnsupportedLayer"][0]))]
            )
            assert second.chain.head.height == 0  # the donor builds on genesis
            assert await driver.check_value(1, 0, bad) is False
            donor = ChainBuilder(cluster.genesis)
            missing, _ = donor.make([make_tx(PUBLISHER_KEY, CHAIN_ID, 0, PublishTask(withheld))])
            with pytest.raises(Ignore):
                await driver.check_value(1, 0, missing)
            assert second.chain.head_state().tasks == {}

            # A sound task is admitted; the second node fetches and keeps its content
            status, body = await post(http, first.url, spec_of(model, validation))
            assert status == 200, body
            await cluster.wait_until(
                lambda: second.content.has_ref(model) and second.content.has_ref(validation),
                timeout=120,
            )
            await cluster.wait_until(lambda: len(second.mempool) == 1, timeout=120)
