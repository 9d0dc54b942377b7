"""Spatial filters shared by the stages: band-pass (difference of Gaussians) and the ring average."""

from __future__ import annotations

import cv2
import numpy as np


def bandpass(image: np.ndarray, low_sigma: float, high_sigma: float) -> np.ndarray:
    """``G(low_sigma) * image - G(high_sigma) * image`` as float32 (mirror borders).

    Removes the smooth 1-photon background (scales >> high_sigma) and pixel noise (< low_sigma).
    """
    image = np.asarray(image, dtype=np.float32)
    smooth = cv2.GaussianBlur(image, (0, 0), low_sigma, borderType=cv2.BORDER_REFLECT) if low_sigma > 0 else image
    return smooth - gaussian_blur(image, high_sigma)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (mirror borders); wide kernels run on a downsampled copy (the result is smooth)."""
    factor = int(sigma // 4)
    if factor < 2 or min(image.shape) < 8 * factor:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    height, width = image.shape
    small = cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    # area averaging over factor px adds variance factor^2/12 to the kernel
    small_sigma = np.sqrt(max(sigma**2 - factor**2 / 12.0, 1.0)) / factor
    small = cv2.GaussianBlur(small, (0, 0), small_sigma, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


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
        outer = cv2.boxFilter(image, cv2.CV_32F, (2 * self.outer + 1,) * 2, normalize=False, borderType=cv2.BORDER_CONSTANT)
        inner = cv2.boxFilter(image, cv2.CV_32F, (2 * self.inner + 1,) * 2, normalize=False, borderType=cv2.BORDER_CONSTANT)
        return outer - inner

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Ring average of one (height, width) image."""
        return self.sum(np.asarray(image, np.float32)) / self.counts

    def apply_stack(self, images: np.ndarray) -> np.ndarray:
        """Ring average of every image of a (n, height, width) stack."""
        return np.stack([self.apply(image) for image in images]) if len(images) else images.astype(np.float32)


def ring_radii(neuron_diameter: float, ring_radius_factor: float) -> tuple[int, int]:
    """(inner radius, width) of the background ring, px."""
    inner = max(int(round(ring_radius_factor * neuron_diameter)), 2)
    width = max(int(round(neuron_diameter / 4)), 2)
    return inner, width
