"""minireformer: the Reformer (Kitaev, Kaiser, Levskaya, ICLR 2020, arXiv 2001.04451) from scratch.

NumPy (or CuPy) only, every backward pass written by hand and checked by finite differences.
Modules, one concept each: backend, tree, layers, attention, lsh, lsh_attention, reversible,
chunking, model, optim, gradcheck, memory, data, train, plotting.
"""

__version__ = "0.1.0"
