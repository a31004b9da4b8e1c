"""Counter-based random numbers: a pure function of (row, col, key), whatever the chunking."""

from __future__ import annotations

import numpy as np

__all__ = ["hash_u64", "hash_uniform"]

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def hash_u64(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """64-bit hashes (splitmix64 finaliser) of integer coordinates, keyed; broadcasts iy and ix."""
    h = (np.asarray(iy).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        np.asarray(ix).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    )
    h ^= np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def hash_uniform(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) float64 values, a pure function of ``(iy, ix, key)``."""
    return (hash_u64(iy, ix, key) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
