"""The micro-batcher: coalesces concurrent requests, keeps each request's rows, survives failures."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import pytest

from radpipe.serving.batcher import MicroBatcher


class Recorder:
    """A stand-in for the model: row i of the answer is the first pixel of image i; records batch sizes."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.sizes: list[int] = []
        self.fail_on = fail_on

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        if self.fail_on is not None and len(self.sizes) == self.fail_on:
            raise RuntimeError("the model fell over")
        return x[:, 0, 0, :1].copy()


def images(*values: float) -> np.ndarray:
    return np.stack([np.full((2, 2, 3), v, np.float32) for v in values])


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_concurrent_requests_share_one_call_and_keep_their_rows() -> None:
    model = Recorder()

    async def main() -> list[np.ndarray]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch_size=16)
            return await asyncio.gather(*(batcher.predict(images(i, i + 0.5)) for i in range(5)))

    answers = run(main())
    assert model.sizes == [10]
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer[:, 0], [i, i + 0.5])


def test_batches_never_exceed_the_maximum_and_a_big_request_is_split_in_order() -> None:
    model = Recorder()

    async def main() -> list[np.ndarray]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch_size=4)
            requests = [images(1, 2), images(3, 4), images(5, 6), images(*range(7, 13))]
            return await asyncio.gather(*(batcher.predict(r) for r in requests))

    answers = run(main())
    assert model.sizes == [4, 2, 4, 2]  # requests 1+2, 3, then the big one in two calls
    np.testing.assert_array_equal(answers[3][:, 0], list(range(7, 13)))


def test_a_lone_request_does_not_wait_for_company() -> None:
    model = Recorder()

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch_size=16)
            for i in range(3):
                await batcher.predict(images(i))

    run(main())
    assert model.sizes == [1, 1, 1]


def test_a_failing_call_fails_its_requests_and_the_next_ones_still_work() -> None:
    model = Recorder(fail_on=1)

    async def main() -> np.ndarray:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch_size=16)
            results = await asyncio.gather(
                batcher.predict(images(1)), batcher.predict(images(2)), return_exceptions=True
            )
            assert all(isinstance(r, RuntimeError) for r in results)
            return await batcher.predict(images(3))

    np.testing.assert_array_equal(run(main())[:, 0], [3])
    assert model.sizes == [2, 1]


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Recorder(), concurrent.futures.ThreadPoolExecutor(1), max_batch_size=0)


def test_a_request_still_being_decoded_joins_the_next_call() -> None:
    model = Recorder()

    async def main() -> list[np.ndarray]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch_size=16, max_wait=30.0)
            token = batcher.expect()  # announced: arrived, still decoding
            first = asyncio.ensure_future(batcher.predict(images(1)))
            await asyncio.sleep(0.05)
            assert not first.done()  # the call waits for the announced request...
            second = await batcher.predict(images(2), token=token)
            return [await first, second]

    first, second = run(main())
    assert model.sizes == [2]  # ...which joins it
    assert first[0, 0] == 1 and second[0, 0] == 2


def test_a_withdrawn_announcement_does_not_hold_the_call() -> None:
    model = Recorder()

    async def main() -> np.ndarray:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch_size=16, max_wait=3600.0)
            token = batcher.expect()
            first = asyncio.ensure_future(batcher.predict(images(1)))
            await asyncio.sleep(0.05)
            batcher.withdraw(token)  # that request was refused (bad input)
            return await asyncio.wait_for(first, timeout=60)

    np.testing.assert_array_equal(run(main())[:, 0], [1])
    assert model.sizes == [1]
