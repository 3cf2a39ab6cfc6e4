"""Features whose distances are exact in float32 whatever the summation order or the CPU's kernels.

Each row is a small integer a ∈ {1, 2, 3} times a ±1 pattern on 1, 4 or 16 coordinates: its squared norm is
a²·n with n ∈ {1, 4, 16}, a perfect square, so its norm a·√n is exact, L2 normalisation gives ±1/√n (a power
of two), and dot products and squared distances are sums of small integers or of powers of two: every
partial sum is exact, so any blocking, order or vector width gives the same bits. Duplicated and scaled rows
add exact ties in both metrics. (A square root of a non-square is not: torch's CPU sqrt is not always
correctly rounded, e.g. √34 → 5.8309522 where IEEE gives 5.8309517, so Euclidean distances agree between two
libraries to one ulp only.)
"""

import numpy as np


def exact_rows(generator: np.random.Generator, count: int, dim: int = 16) -> np.ndarray:
    """`[count, dim]` float32 rows as described above (dim ≥ 16)."""
    out = np.zeros((count, dim), dtype=np.float32)
    for row in out:
        support = generator.permutation(dim)[:generator.choice([1, 4, 16])]
        row[support] = generator.choice([-1.0, 1.0], size=len(support)) * generator.integers(1, 4)
    return out
