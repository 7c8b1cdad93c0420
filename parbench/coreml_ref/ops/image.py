"""Resizing and resampling ops: upsample_*, resize_*, resize (iOS17), crop, crop_resize,
resample, affine.

Bilinear resizes follow the grid-point formulas of the op definitions (``resize_bilinear``'s
sampling modes); the two modes PyTorch shares (align corners, half-pixel) use
``F.interpolate`` directly, the others a separable interpolation on explicit grid points.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import OpCtx, Run, kernel

_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")


def grid_points(xin: int, xout: int, mode: str) -> torch.Tensor:
    """Sample positions (in input pixel units) of ``resize_bilinear``'s sampling modes."""
    i = torch.arange(xout, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if xout == 1:
            g = torch.full((1,), (xin - 1) / 2.0 if mode == "ALIGN_CORNERS" else 0.0, dtype=torch.float64)
        else:
            g = i * ((xin - 1) / (xout - 1))
    elif mode == "DEFAULT":
        g = i * (xin / xout)  # == i * (xin - xin/xout) / (xout - 1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, xin - 1) / xout
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = xin / xout
        g = i * spacing + 0.5 * spacing - 0.5
    else:
        raise ValueError(mode)
    return g.clamp(0, xin - 1)


def _lerp_axis(v: torch.Tensor, dim: int, pos: torch.Tensor) -> torch.Tensor:
    n = v.shape[dim]
    i0 = pos.floor().long().clamp(0, n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w = (pos - i0.to(pos.dtype)).to(v.dtype)
    shape = [1] * v.dim()
    shape[dim] = -1
    a, b = v.index_select(dim, i0), v.index_select(dim, i1)
    return a + (b - a) * w.reshape(shape)


def resize_linear(v: torch.Tensor, out_hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Bilinear resize of the last two dims with a MIL sampling mode."""
    h, w = v.shape[-2], v.shape[-1]
    oh, ow = out_hw
    if v.dim() == 4 and mode in ("STRICT_ALIGN_CORNERS", "UNALIGN_CORNERS") and oh > 1 and ow > 1:
        return F.interpolate(v, size=(oh, ow), mode="bilinear", align_corners=mode != "UNALIGN_CORNERS")
    out = _lerp_axis(v, v.dim() - 2, grid_points(h, oh, mode))
    return _lerp_axis(out, v.dim() - 1, grid_points(w, ow, mode))


def _nearest_index(xin: int, xout: int, mode: str) -> torch.Tensor:
    if mode == "DEFAULT":  # PyTorch's "nearest": floor(i * in / out)
        return torch.clamp(
            (torch.arange(xout, dtype=torch.float64) * (xin / xout)).floor().long(), 0, xin - 1
        )
    return torch.clamp((grid_points(xin, xout, mode) + 0.5).floor().long(), 0, xin - 1)


def resize_nearest(v: torch.Tensor, out_hw: tuple[int, int], mode: str = "DEFAULT") -> torch.Tensor:
    h, w = v.shape[-2], v.shape[-1]
    oh, ow = out_hw
    if mode == "DEFAULT" and v.dim() == 4:  # torch's nearest with a size: floor(i * in / out)
        return F.interpolate(v, size=(oh, ow), mode="nearest")
    return _nn_index(v, h, w, oh, ow, mode)


def _nn_index(v: torch.Tensor, h: int, w: int, oh: int, ow: int, mode: str) -> torch.Tensor:
    out = v.index_select(v.dim() - 2, _nearest_index(h, oh, mode))
    return out.index_select(v.dim() - 1, _nearest_index(w, ow, mode))


@kernel("upsample_nearest_neighbor", fp16_exact=True)
def _upsample_nn(c: OpCtx) -> Run:
    x = c.get("x")
    sh, sw = c.float("scale_factor_height", 1.0), c.float("scale_factor_width", 1.0)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        return resize_nearest(v, (math.floor(v.shape[-2] * sh), math.floor(v.shape[-1] * sw)))

    return run


@kernel("resize_nearest_neighbor", fp16_exact=True)
def _resize_nn(c: OpCtx) -> Run:
    x, th, tw = c.get("x"), c.int("target_size_height"), c.int("target_size_width")
    return lambda env: resize_nearest(x(env), (th, tw))


@kernel("upsample_bilinear")
def _upsample_bilinear(c: OpCtx) -> Run:
    x = c.get("x")
    sh, sw = c.float("scale_factor_height", 1.0), c.float("scale_factor_width", 1.0)
    align = bool(c.bool("align_corners", True))
    half = c.bool("half_pixel_centers", None)
    if half is None:
        half = not align
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        return resize_linear(v, (math.floor(v.shape[-2] * sh), math.floor(v.shape[-1] * sw)), mode)

    return run


@kernel("resize_bilinear")
def _resize_bilinear(c: OpCtx) -> Run:
    x = c.get("x")
    th, tw = c.int("target_size_height", 1), c.int("target_size_width", 1)
    mode = c.str("sampling_mode", "DEFAULT")
    if mode not in _MODES:
        raise c.unsupported(f"sampling_mode {mode!r}")
    return lambda env: resize_linear(x(env), (th, tw), mode)


@kernel("resize")
def _resize(c: OpCtx) -> Run:
    x = c.get("x")
    shape_in = c.get("shape")
    nd = c.int("resized_dims")
    interp = c.str("interpolation_mode", "LINEAR")
    mode = c.str("sampling_mode", "DEFAULT")
    if nd not in (1, 2):
        raise c.unsupported(f"resized_dims={nd}")
    if interp not in ("LINEAR", "NEAREST_NEIGHBOR") or mode not in _MODES:
        raise c.unsupported(f"interpolation_mode {interp!r} / sampling_mode {mode!r}")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        s = [int(i) for i in shape_in(env).reshape(-1).tolist()]
        tgt = s[len(s) - nd :]
        cur = list(v.shape[v.dim() - nd :])
        tgt = [cur[i] if t == 0 else t for i, t in enumerate(tgt)]
        squeeze = nd == 1
        if squeeze:
            v, tgt = v.unsqueeze(-2), [1] + tgt
        out = (
            resize_linear(v, (tgt[0], tgt[1]), mode)
            if interp == "LINEAR"
            else resize_nearest(v, (tgt[0], tgt[1]), mode)
        )
        return out.squeeze(-2) if squeeze else out

    return run


@kernel("crop", fp16_exact=True)
def _crop(c: OpCtx) -> Run:
    x = c.get("x")
    ch, cw = c.ints("crop_height"), c.ints("crop_width")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        h, w = v.shape[-2], v.shape[-1]
        return v[..., ch[0] : h - ch[1], cw[0] : w - cw[1]]

    return run


# -- sampling at arbitrary positions ---------------------------------------------------------


def _map_index(i: torch.Tensor, n: int, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer sample indices -> in-range indices, plus a validity mask (constant padding)."""
    if padding == "border":
        return i.clamp(0, n - 1), torch.ones_like(i, dtype=torch.bool)
    if padding == "reflection":  # mirror about the edge pixels: |1,2,3| -> 2,3,2,1,2,3,2,1
        if n == 1:
            return torch.zeros_like(i), torch.ones_like(i, dtype=torch.bool)
        p = 2 * (n - 1)
        m = torch.remainder(i, p)
        return torch.where(m >= n, p - m, m), torch.ones_like(i, dtype=torch.bool)
    if padding == "symmetric":  # mirror including the edge: |1,2,3| -> 3,2,1,1,2,3,3,2,1
        p = 2 * n
        m = torch.remainder(i, p)
        return torch.where(m >= n, p - 1 - m, m), torch.ones_like(i, dtype=torch.bool)
    valid = (i >= 0) & (i < n)
    return i.clamp(0, n - 1), valid


def sample_2d(
    img: torch.Tensor, px: torch.Tensor, py: torch.Tensor, method: str, padding: str, pad_value: float
) -> torch.Tensor:
    """Sample ``img`` [B, C, H, W] at pixel positions px, py [B, Ho, Wo] -> [B, C, Ho, Wo]."""
    b, ch, h, w = img.shape
    flat = img.reshape(b, ch, h * w)

    def take(ix: torch.Tensor, iy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mx, vx = _map_index(ix, w, padding)
        my, vy = _map_index(iy, h, padding)
        lin = (my * w + mx).reshape(b, 1, -1).expand(b, ch, -1)
        vals = torch.gather(flat, 2, lin).reshape(b, ch, *ix.shape[1:])
        return vals, (vx & vy).unsqueeze(1)

    def pick(vals: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if padding != "constant":
            return vals
        return torch.where(valid, vals, torch.full((), pad_value, dtype=vals.dtype))

    if method == "nearest":
        return pick(*take(torch.floor(px + 0.5).long(), torch.floor(py + 0.5).long()))
    x0, y0 = torch.floor(px), torch.floor(py)
    wx, wy = (px - x0).unsqueeze(1).to(img.dtype), (py - y0).unsqueeze(1).to(img.dtype)
    x0l, y0l = x0.long(), y0.long()
    v00 = pick(*take(x0l, y0l))
    v01 = pick(*take(x0l + 1, y0l))
    v10 = pick(*take(x0l, y0l + 1))
    v11 = pick(*take(x0l + 1, y0l + 1))
    top = v00 + (v01 - v00) * wx
    bot = v10 + (v11 - v10) * wx
    return top + (bot - top) * wy


def _to_pixels(coord: torch.Tensor, n: int, mode: str, align: bool) -> torch.Tensor:
    if mode == "unnormalized":
        return coord
    if mode == "normalized_minus_one_to_one":
        return (coord + 1) / 2 * (n - 1) if align else ((coord + 1) * n - 1) / 2
    if mode == "normalized_zero_to_one":
        return coord * (n - 1) if align else coord * n - 0.5
    raise ValueError(mode)


def _check_resample(c: OpCtx) -> tuple[str, str, float, str, bool]:
    method = c.str("sampling_mode")
    padding = c.str("padding_mode")
    coords = c.str("coordinates_mode")
    if method not in ("bilinear", "nearest"):
        raise c.unsupported(f"sampling_mode {method!r}")
    if padding not in ("constant", "border", "reflection", "symmetric"):
        raise c.unsupported(f"padding_mode {padding!r}")
    if coords not in ("unnormalized", "normalized_minus_one_to_one", "normalized_zero_to_one"):
        raise c.unsupported(f"coordinates_mode {coords!r}")
    return method, padding, c.float("padding_value", 0.0), coords, bool(c.bool("align_corners", False))


@kernel("resample")
def _resample(c: OpCtx) -> Run:
    x, coords_g = c.get("x"), c.get("coordinates")
    method, padding, value, cmode, align = _check_resample(c)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        co = coords_g(env).to(torch.float64)
        px = _to_pixels(co[..., 0], v.shape[-1], cmode, align)
        py = _to_pixels(co[..., 1], v.shape[-2], cmode, align)
        return sample_2d(v, px, py, method, padding, value)

    return run


@kernel("affine")
def _affine(c: OpCtx) -> Run:
    x, mat = c.get("x"), c.get("transform_matrix")
    oh, ow = c.int("output_height"), c.int("output_width")
    method, padding, value, cmode, align = _check_resample(c)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        m = mat(env).to(torch.float64).reshape(-1, 6)
        if m.shape[0] == 1:
            m = m.expand(v.shape[0], 6)
        # output grid in the same coordinate convention as the input
        jx = torch.arange(ow, dtype=torch.float64)
        iy = torch.arange(oh, dtype=torch.float64)
        gx = _from_pixels(jx, ow, cmode, align)
        gy = _from_pixels(iy, oh, cmode, align)
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        a = m[:, :, None, None]
        xs = a[:, 0] * xx + a[:, 1] * yy + a[:, 2]
        ys = a[:, 3] * xx + a[:, 4] * yy + a[:, 5]
        px = _to_pixels(xs, v.shape[-1], cmode, align)
        py = _to_pixels(ys, v.shape[-2], cmode, align)
        return sample_2d(v, px, py, method, padding, value)

    return run


def _from_pixels(p: torch.Tensor, n: int, mode: str, align: bool) -> torch.Tensor:
    if mode == "unnormalized":
        return p
    if mode == "normalized_minus_one_to_one":
        return p / max(n - 1, 1) * 2 - 1 if align else (2 * p + 1) / n - 1
    return p / max(n - 1, 1) if align else (p + 0.5) / n


def _box_grid(start: float, end: float, xout: int, mode: str) -> torch.Tensor:
    i = torch.arange(xout, dtype=torch.float64)
    span = end - start
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if xout == 1:
            return torch.full(
                (1,), start + (span / 2 if mode == "ALIGN_CORNERS" else 0.0), dtype=torch.float64
            )
        return start + i * (span / (xout - 1))
    if mode == "DEFAULT":
        return start + i * (span / xout)
    if mode == "OFFSET_CORNERS":
        return start + (i + 0.5) * (span / xout)
    return start + (i + 0.5) * (span / xout) - 0.5  # UNALIGN_CORNERS


@kernel("crop_resize")
def _crop_resize(c: OpCtx) -> Run:
    x = c.get("x")
    ios17 = c.opset in ("iOS17", "iOS18")
    boxes_g = c.get("boxes" if ios17 else "roi")
    idx_g = c.get_opt("box_indices") if ios17 else None
    th, tw = c.int("target_height", 1), c.int("target_width", 1)
    normalized = bool(c.bool("normalized_coordinates", False))
    scale = c.float("spatial_scale", 1.0)
    coord_mode = c.str("box_coordinate_mode", "CORNERS_HEIGHT_FIRST")
    mode = c.str("sampling_mode", "DEFAULT")
    pad_value = c.float("pad_value", 0.0)
    if mode not in _MODES:
        raise c.unsupported(f"sampling_mode {mode!r}")

    def corners(bx: list[float]) -> tuple[float, float, float, float]:
        a, b, cc, d = bx
        if coord_mode == "CORNERS_HEIGHT_FIRST":
            return a, b, cc, d
        if coord_mode == "CORNERS_WIDTH_FIRST":
            return b, a, d, cc
        if coord_mode == "CENTER_SIZE_HEIGHT_FIRST":
            return a - cc / 2, b - d / 2, a + cc / 2, b + d / 2
        if coord_mode == "CENTER_SIZE_WIDTH_FIRST":
            return b - d / 2, a - cc / 2, b + d / 2, a + cc / 2
        raise c.unsupported(f"box_coordinate_mode {coord_mode!r}")

    def crop_one(img: torch.Tensor, bx: list[float]) -> torch.Tensor:
        h, w = img.shape[-2], img.shape[-1]
        y0, x0, y1, x1 = corners(bx)
        if normalized:
            y0, y1, x0, x1 = y0 * (h - 1), y1 * (h - 1), x0 * (w - 1), x1 * (w - 1)
        y0, y1, x0, x1 = y0 * scale, y1 * scale, x0 * scale, x1 * scale
        ys, xs = _box_grid(y0, y1, th, mode), _box_grid(x0, x1, tw, mode)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return sample_2d(img.unsqueeze(0), xx[None], yy[None], "bilinear", "constant", pad_value)[0]

    def run(env: list) -> torch.Tensor:
        v = x(env)
        bxs = boxes_g(env).to(torch.float64)
        if ios17:
            bxs = bxs.reshape(-1, 4)
            ids = idx_g(env).reshape(-1).long().tolist() if idx_g is not None else list(range(bxs.shape[0]))
            return torch.stack([crop_one(v[i], bxs[n].tolist()) for n, i in enumerate(ids)])
        roi = bxs.reshape(bxs.shape[0], -1)
        if roi.shape[1] == 5:
            return torch.stack([crop_one(v[int(r[0])], r[1:].tolist()).unsqueeze(0) for r in roi])
        return torch.stack(
            [torch.stack([crop_one(v[b], r.tolist()) for b in range(v.shape[0])]) for r in roi]
        )

    return run
