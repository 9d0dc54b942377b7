"""Spatial filters shared by the stages: band-pass (difference of Gaussians) and the ring average."""

from __future__ import annotations

import cv2
import numpy as np


def bandpass(image: np.ndarray, low_sigma: float, high_sigma: float) -> np.ndarray:
    """``G(low_sigma) * image - G(high_sigma) * image`` as float32 (mirror borders).

    Removes the smooth 1-photon background (scales >> high_sigma) and pixel noise (< low_sigma).
    """
    return Bandpass(image.shape, low_sigma, high_sigma)(image)


class Bandpass:
    """:func:`bandpass` for many frames of one shape, reusing its work buffers.

    Streaming stages filter thousands of frames; allocating fresh frame-sized arrays for every
    one costs more (page faults) than the filtering itself.
    The wide Gaussian runs on a copy downsampled by ``high_sigma // 2.5`` (its result is smooth).
    """

    def __init__(self, shape: tuple[int, int], low_sigma: float, high_sigma: float):
        self.shape = tuple(shape)
        self.low_sigma = low_sigma
        self.high_sigma = high_sigma
        height, width = self.shape
        factor = int(high_sigma // 2.5)
        self.factor = factor if factor >= 2 and min(height, width) >= 8 * factor else 1
        self._image = np.empty(self.shape, np.float32)
        self._background = np.empty(self.shape, np.float32)
        if self.factor > 1:
            small = (height // self.factor, width // self.factor)
            self._small = np.empty(small, np.float32)
            self._small_blurred = np.empty(small, np.float32)
            # area averaging over factor px already adds variance factor^2 / 12
            self._small_sigma = float(np.sqrt(max(high_sigma**2 - self.factor**2 / 12.0, 1.0)) / self.factor)

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Band-passed ``image`` written to ``out`` (a new float32 array if None)."""
        out = np.empty(self.shape, np.float32) if out is None else out
        source = image
        if image.dtype != np.float32 or not image.flags.c_contiguous or np.may_share_memory(image, out):
            source = self._image
            np.copyto(source, image, casting="unsafe")
        if self.low_sigma > 0:
            cv2.GaussianBlur(source, (0, 0), self.low_sigma, dst=out, borderType=cv2.BORDER_REFLECT)
        else:
            np.copyto(out, source)
        if self.factor > 1:
            height, width = self.shape
            cv2.resize(source, self._small.shape[::-1], dst=self._small, interpolation=cv2.INTER_AREA)
            cv2.GaussianBlur(self._small, (0, 0), self._small_sigma, dst=self._small_blurred,
                             borderType=cv2.BORDER_REFLECT)
            cv2.resize(self._small_blurred, (width, height), dst=self._background, interpolation=cv2.INTER_LINEAR)
        else:
            cv2.GaussianBlur(source, (0, 0), self.high_sigma, dst=self._background, borderType=cv2.BORDER_REFLECT)
        np.subtract(out, self._background, out=out)
        return out

    def stack(self, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Band-pass every image of a (n, height, width) stack."""
        out = np.empty(images.shape, np.float32) if out is None else out
        for image, target in zip(images, out):
            self(image, target)
        return out


def neuron_filter_sigmas(neuron_diameter: float) -> tuple[float, float]:
    """(low, high) band-pass sigmas matched to a soma of ``neuron_diameter`` px."""
    return neuron_diameter / 4.0, neuron_diameter / 2.0


class RingAverage:
    """Mean over a square annulus around every pixel: the 1-photon background model's neighbourhood.

    The annulus holds the pixels whose Chebyshev distance is in ``[inner + 1, inner + width]``.
    Pixels outside the image do not count (the mean is over the annulus pixels that exist).
    As an operator on flattened images, ``apply(x) = (K x) / n`` with ``K`` the symmetric
    annulus-sum operator (:meth:`sum`) and ``n = K 1`` (:attr:`counts`); its adjoint is ``K (v / n)``.
    """

    def __init__(self, shape: tuple[int, int], inner: int, width: int):
        self.shape = shape
        self.inner = int(inner)
        self.outer = int(inner) + int(width)
        self.counts = self.sum(np.ones(shape, np.float32))
        self.counts[self.counts < 1] = 1

    def sum(self, image: np.ndarray) -> np.ndarray:
        """Annulus sum of one image (zero outside the image)."""
        return box_sum(image, self.outer) - box_sum(image, self.inner)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Ring average of one (height, width) image."""
        return self.sum(np.asarray(image, np.float32)) / self.counts

    def apply_stack(self, images: np.ndarray) -> np.ndarray:
        """Ring average of every image of a (n, height, width) float32 stack, into a new stack."""
        results = box_sums(images, self.outer)
        inner = np.empty(self.shape, np.float32)
        for image, result in zip(images, results):
            np.subtract(result, box_sum(image, self.inner, out=inner), out=result)
            np.divide(result, self.counts, out=result)
        return results


def box_sum(image: np.ndarray, radius: int, out: np.ndarray | None = None) -> np.ndarray:
    """Sum over the (2 radius + 1)^2 square around every pixel (zero outside the image), float32
    (written to ``out`` if given)."""
    return cv2.boxFilter(image, cv2.CV_32F, (2 * radius + 1,) * 2, dst=out, normalize=False,
                         borderType=cv2.BORDER_CONSTANT)


def box_sums(images: np.ndarray, radius: int, weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`box_sum` of every image of a (n, height, width) stack (times ``weights`` if
    given), written into one new float32 stack image by image."""
    results = np.empty(images.shape, np.float32)
    weighted = np.empty(images.shape[1:], np.float32)
    for image, result in zip(images, results):
        if weights is not None:
            image = np.multiply(image, weights, out=weighted)
        box_sum(image, radius, out=result)
    return results


def ring_radii(neuron_diameter: float, ring_radius_factor: float) -> tuple[int, int]:
    """(inner radius, width) of the background ring, px."""
    inner = max(int(round(ring_radius_factor * neuron_diameter)), 2)
    width = max(int(round(neuron_diameter / 4)), 2)
    return inner, width
