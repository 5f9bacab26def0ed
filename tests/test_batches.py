"""Model calls a batch at a time: never more input pixels in one call than the budget allows."""

from __future__ import annotations

import numpy as np

from radpipe.batches import INPUT_PIXEL_BUDGET, model_batch_size, predict_in_batches


class Recorder:
    """Stands in for a Keras model's two attributes that batching reads; records each call's size."""

    def __init__(self, side: int) -> None:
        self.input_shape = (None, side, side, 3)
        self.output_shape = (None, 2)
        self.calls: list[int] = []

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32
        self.calls.append(len(batch))
        return np.stack([batch.mean(axis=(1, 2, 3)), -batch.mean(axis=(1, 2, 3))], axis=1)


def test_a_large_input_gets_fewer_images_per_call_and_the_same_answers() -> None:
    images = np.arange(20 * 8 * 8 * 3, dtype=np.uint8).reshape(20, 8, 8, 3)
    small = Recorder(224)
    large = Recorder(560)
    assert model_batch_size(small, 32) == 32 and model_batch_size(large, 32) == INPUT_PIXEL_BUDGET // 560**2 == 8
    assert model_batch_size(Recorder(4000), 32) == 1  # never zero
    out_small = predict_in_batches(small, images, 32)
    out_large = predict_in_batches(large, images, 32)
    assert small.calls == [20] and large.calls == [8, 8, 4]
    assert np.array_equal(out_small, out_large)


def test_a_model_without_a_fixed_input_size_keeps_the_requested_batch() -> None:
    model = Recorder(8)
    model.input_shape = (None, None, None, 3)
    assert model_batch_size(model, 5) == 5
