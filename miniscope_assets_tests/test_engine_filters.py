"""The spatial filters' stack and in-place forms give what their one-image definitions give."""

import numpy as np

from miniscope_assets.engine.filters import Bandpass, RingAverage, box_sum, box_sums


def _stack(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(10, 3, (5, 37, 41)).astype(np.float32)


def test_ring_average_of_a_stack_is_that_of_each_image():
    images = _stack()
    ring = RingAverage(images.shape[1:], 6, 3)
    expected = np.stack([(box_sum(image, 9) - box_sum(image, 6)) / ring.counts for image in images])
    np.testing.assert_array_equal(ring.apply_stack(images), expected)
    np.testing.assert_array_equal(ring.apply(images[2]), expected[2])


def test_weighted_box_sums_of_a_stack_are_those_of_each_weighted_image():
    images = _stack(1)
    weights = np.random.default_rng(2).random(images.shape[1:]).astype(np.float32)
    np.testing.assert_array_equal(box_sums(images, 4, weights), np.stack([box_sum(i * weights, 4) for i in images]))
    np.testing.assert_array_equal(box_sums(images, 4), np.stack([box_sum(i, 4) for i in images]))
    # zero outside the image: a corner's sum covers only the pixels inside
    assert box_sum(np.ones((9, 9), np.float32), 2)[0, 0] == 9


def test_bandpass_gives_the_same_whatever_the_input_type_layout_or_output_buffer():
    frames = (_stack(3) * 8).clip(0, 255).astype(np.uint8)
    bandpass = Bandpass(frames.shape[1:], 1.5, 8.0)
    expected = bandpass(frames[0])
    as_float = frames[0].astype(np.float32)
    np.testing.assert_array_equal(bandpass(as_float), expected)
    np.testing.assert_array_equal(bandpass(np.asfortranarray(as_float)), expected)
    in_place = as_float.copy()
    np.testing.assert_array_equal(bandpass(in_place, out=in_place), expected)
    np.testing.assert_array_equal(bandpass.stack(frames)[0], expected)
