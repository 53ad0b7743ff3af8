"""Datasets: the one place in ``pes`` that reads files (each dataset is its own module).

``pes.data.images``: MNIST, Fashion-MNIST, CIFAR-10 (sources tfds | idx | npz | auto);
``pes.data.ptb``: Penn Treebank characters.
"""
