"""minireformer: the Reformer (Kitaev, Kaiser, Levskaya, ICLR 2020, arXiv 2001.04451) from scratch.

NumPy (or CuPy) only, every backward pass written by hand and checked by finite differences.
Modules, one concept each: backend, checks, tree, layers, attention, lsh, windows,
lsh_attention, chunking, positional, sublayers, reversible, model (the baseline Transformer LM),
reformer (the Reformer LM), optim, gradcheck, memory, plotting.
"""

__version__ = "0.1.0"
