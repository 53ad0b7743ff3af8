"""Datasets as NumPy arrays: the one place in `pes` that reads files.

Image classification (MNIST, Fashion-MNIST, CIFAR-10): `pes.data.images` (`load`,
`load_raw`, `normalize`; sources tfds | idx | npz | auto).
"""

from pes.data import images
from pes.data.images import DataUnavailableError, ImageData, RawData

__all__ = ["images", "DataUnavailableError", "ImageData", "RawData"]
