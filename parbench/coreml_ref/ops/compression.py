"""Compressed weights (``constexpr_*``, iOS16 and iOS18) and iOS17 quantize / dequantize.

All ``constexpr_*`` inputs are constants, so the executor evaluates these once at load time;
the decompression follows the op definitions (bit packing LSB first, row-major), not
coremltools' helpers, so the tests can hold the two against each other.
"""

from __future__ import annotations

import numpy as np
import torch

from parbench.coreml_ref.registry import OpCtx, Run, kernel


def _axis_param(p: torch.Tensor, rank: int, axis: int | None) -> torch.Tensor:
    """Scalar stays scalar; a vector broadcasts along ``axis`` of a rank-``rank`` tensor."""
    if p.dim() == 0:
        return p
    if p.dim() == rank:
        return p
    shape = [1] * rank
    shape[(axis or 0) % rank] = -1
    return p.reshape(shape)


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unsigned ``nbits``-wide fields packed LSB first into bytes -> uint8/uint16 array."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.uint16)
    return (bits << np.arange(nbits, dtype=np.uint16)).sum(axis=1)


@kernel("constexpr_affine_dequantize")
def _affine_dequantize(c: OpCtx) -> Run:
    q = c.tensor("quantized_data").float()
    zp = c.tensor("zero_point").float()
    scale = c.tensor("scale").float()
    axis = c.int("axis", 0)
    out = _axis_param(scale, q.dim(), axis) * (q - _axis_param(zp, q.dim(), axis))
    return lambda env: out


@kernel("constexpr_cast")
def _constexpr_cast(c: OpCtx) -> Run:
    v = c.tensor("source_val")
    return lambda env: v.float()


def _lut16(c: OpCtx) -> torch.Tensor:
    lut = c.tensor("lut").float().reshape(-1)
    shape = [int(s) for s in np.asarray(c.raw("shape")).reshape(-1)]
    count = int(np.prod(shape))
    nbits = int(np.log2(lut.numel()))
    idx = unpack_bits(c.raw("indices"), nbits, count).astype(np.int64)
    return lut[torch.from_numpy(idx)].reshape(shape)


def _block_index(shape: list[int], blocks: list[int]) -> list[torch.Tensor]:
    """Per dim, the block (group) index of each position: pos // (size / n_blocks)."""
    return [torch.arange(s) // (s // b) for s, b in zip(shape, blocks, strict=True)]


def lut_lookup(indices: torch.Tensor, lut: torch.Tensor, vector_axis: int | None) -> torch.Tensor:
    """iOS18 lut_to_dense: ``lut`` [*blocks, NUM_PALETTES, VECTOR_SIZE] indexed per block."""
    shape = list(indices.shape)
    k = indices.dim()
    blocks = list(lut.shape[:k])
    vs = lut.shape[-1]
    bidx = _block_index(shape, blocks)
    grids = torch.meshgrid(*bidx, indexing="ij") if k else ()
    vals = lut[tuple(grids) + (indices.long(),)]  # [*shape, VS]
    if vs == 1:
        return vals[..., 0]
    a = (vector_axis or 0) % k
    # place each looked-up vector contiguously along the vector axis
    vals = vals.movedim(-1, a + 1)  # [..., shape[a], VS, ...]
    out_shape = shape.copy()
    out_shape[a] *= vs
    return vals.reshape(out_shape)


@kernel("constexpr_lut_to_dense")
def _lut_to_dense(c: OpCtx) -> Run:
    if c.opset == "iOS16":
        out = _lut16(c)
    else:
        idx = c.tensor("indices")
        out = lut_lookup(idx, c.tensor("lut").float(), c.int("vector_axis"))
    return lambda env: out


@kernel("constexpr_sparse_to_dense")
def _sparse_to_dense(c: OpCtx) -> Run:
    data = c.tensor("nonzero_data").reshape(-1)
    if c.opset == "iOS16":
        shape = [int(s) for s in np.asarray(c.raw("shape")).reshape(-1)]
        count = int(np.prod(shape))
        mask = np.unpackbits(np.asarray(c.raw("mask"), dtype=np.uint8).reshape(-1), bitorder="little")
        mask_t = torch.from_numpy(mask[:count].astype(bool)).reshape(shape)
    else:
        mask_t = c.tensor("mask").bool()
        shape = list(mask_t.shape)
    out = torch.zeros(shape, dtype=data.dtype)
    out[mask_t] = data
    return lambda env: out


@kernel("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(c: OpCtx) -> Run:
    data = c.tensor("data").float()
    scale = c.tensor("scale").float()
    offset = c.tensor("offset").float() if c.has("offset") else None
    out = data
    shape = list(data.shape)

    def expand(p: torch.Tensor) -> torch.Tensor:
        for d, (s, b) in enumerate(zip(shape, p.shape, strict=True)):
            if b != s:
                p = p.repeat_interleave(s // b, dim=d)
        return p

    if offset is not None:
        out = out - expand(offset)
    out = expand(scale) * out
    return lambda env: out


@kernel("constexpr_lut_to_sparse")
def _lut_to_sparse(c: OpCtx) -> Run:
    mask = c.tensor("indices_mask").bool()
    nz = c.tensor("indices_nonzero_data").reshape(-1)
    lut = c.tensor("lut").float()
    va = c.int("vector_axis")
    dense_idx = torch.zeros(mask.shape, dtype=torch.long)
    dense_idx[mask] = nz.long()
    dense = lut_lookup(dense_idx, lut, va)
    vs = lut.shape[-1]
    if vs > 1:
        mask = mask.repeat_interleave(vs, dim=(va or 0) % mask.dim())
    out_mask, out_vals = mask.to(torch.uint8), dense[mask]
    return lambda env: (out_mask, out_vals)


@kernel("constexpr_sparse_blockwise_shift_scale")
def _sparse_shift_scale(c: OpCtx) -> Run:
    mask = c.tensor("data_mask").bool()
    data = c.tensor("nonzero_data").float().reshape(-1)
    scale = c.tensor("scale").float()
    offset = c.tensor("offset").float() if c.has("offset") else None
    shape = list(mask.shape)

    def expand(p: torch.Tensor) -> torch.Tensor:
        for d, (s, b) in enumerate(zip(shape, p.shape, strict=True)):
            if b != s:
                p = p.repeat_interleave(s // b, dim=d)
        return p

    dense = torch.zeros(shape)
    dense[mask] = data
    if offset is not None:
        dense = dense - expand(offset)
    dense = expand(scale) * dense
    out_mask, out_vals = mask.to(torch.uint8), dense[mask]
    return lambda env: (out_mask, out_vals)


_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}


@kernel("quantize")
def _quantize(c: OpCtx) -> Run:
    x = c.get("input")
    dt = c.str("output_dtype")
    if dt not in _QRANGE:
        raise c.unsupported(f"output_dtype {dt!r}")
    lo, hi = _QRANGE[dt]
    rank, axis = c.in_rank("input"), c.int("axis")
    scale = _axis_param(c.tensor("scale").float(), rank, axis)
    zp = _axis_param(c.tensor("zero_point").float(), rank, axis) if c.has("zero_point") else 0.0
    return lambda env: torch.clamp(torch.round(x(env) / scale) + zp, lo, hi)


@kernel("dequantize")
def _dequantize(c: OpCtx) -> Run:
    x = c.get("input")
    rank, axis = c.in_rank("input"), c.int("axis")
    scale = _axis_param(c.tensor("scale").float(), rank, axis)
    zp = _axis_param(c.tensor("zero_point").float(), rank, axis) if c.has("zero_point") else 0.0
    return lambda env: scale * (x(env).float() - zp)
