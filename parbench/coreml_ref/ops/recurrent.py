"""rnn, lstm, gru (iOS15 definitions; iOS17 adds fp16, iOS18 gru adds reset_after/input_bias).

Inputs are sequence-major ``x: [s, b, I]``.  Weights keep MIL's gate order: lstm
``[input, forget, output, cell]``, gru ``[reset, output(new), update]``; biases are the sum of
input-side and hidden-side biases (one vector), as the op definitions say.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import OpCtx, Run, kernel


def _activation(c: OpCtx, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    acts: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "linear": lambda t: t,
        # Core ML's defaults for the parametric ones: hard sigmoid 0.2 x + 0.5, scaled tanh 1.0 tanh(1.0 x)
        "hard_sigmoid": lambda t: torch.clamp(0.2 * t + 0.5, 0.0, 1.0),
        "sigmoid_hard": lambda t: torch.clamp(0.2 * t + 0.5, 0.0, 1.0),
        "scaled_tanh": torch.tanh,
    }
    if name not in acts:
        raise c.unsupported(f"activation {name!r}")
    return acts[name]


def _run_direction(
    step: Callable[[torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]],
    x: torch.Tensor,
    state: tuple[torch.Tensor, ...],
    reverse: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Unroll ``step`` over x [s, b, I]; returns all hidden states [s, b, H] in time order."""
    hs = [torch.empty(0)] * x.shape[0]
    order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    for t in order:
        state = step(x[t], state)
        hs[t] = state[0]
    return torch.stack(hs), state


def _outputs(seq: torch.Tensor, output_sequence: bool, reverse_last: bool) -> torch.Tensor:
    if output_sequence:
        return seq
    # the "last" step of a reverse pass is time 0
    return (seq[:1] if reverse_last else seq[-1:]).clone()


@kernel("rnn")
def _rnn(c: OpCtx) -> Run:
    x, h0 = c.get("x"), c.get("initial_h")
    w_ih, w_hh = c.tensor("weight_ih").float(), c.tensor("weight_hh").float()
    bias = c.tensor("bias").float() if c.has("bias") else torch.zeros(w_ih.shape[0])
    direction = c.str("direction", "forward")
    if direction not in ("forward", "reverse"):
        raise c.unsupported(f"direction {direction!r}")
    out_seq = bool(c.bool("output_sequence", False))
    act = _activation(c, c.str("activation", "tanh"))

    def step(xt: torch.Tensor, st: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (act(F.linear(xt, w_ih, bias) + F.linear(st[0], w_hh)),)

    def run(env: list) -> tuple[torch.Tensor, torch.Tensor]:
        seq, (h,) = _run_direction(step, x(env), (h0(env),), direction == "reverse")
        return _outputs(seq, out_seq, direction == "reverse"), h

    return run


@kernel("lstm")
def _lstm(c: OpCtx) -> Run:
    x, h0_g, c0_g = c.get("x"), c.get("initial_h"), c.get("initial_c")
    direction = c.str("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise c.unsupported(f"direction {direction!r}")
    out_seq = bool(c.bool("output_sequence", False))
    ract = _activation(c, c.str("recurrent_activation", "sigmoid"))
    cact = _activation(c, c.str("cell_activation", "tanh"))
    act = _activation(c, c.str("activation", "tanh"))
    clip = c.float("clip") if c.has("clip") else None

    def params(suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        w_ih = c.tensor("weight_ih" + suffix).float()
        w_hh = c.tensor("weight_hh" + suffix).float()
        hidden = w_hh.shape[1]
        b = c.tensor("bias" + suffix).float() if c.has("bias" + suffix) else torch.zeros(4 * hidden)
        p = c.tensor("peephole" + suffix).float() if c.has("peephole" + suffix) else torch.zeros(3 * hidden)
        return w_ih, w_hh, b, p

    def make_step(w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> Callable:
        pi, pf, po = p.chunk(3)

        def step(xt: torch.Tensor, st: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            h, cell = st
            gi, gf, go, gz = (F.linear(xt, w_ih, b) + F.linear(h, w_hh)).chunk(4, dim=-1)
            i = ract(gi + pi * cell)
            f = ract(gf + pf * cell)
            z = cact(gz)
            cell = f * cell + i * z
            if clip is not None:
                cell = torch.clamp(cell, -clip, clip)
            o = ract(go + po * cell)
            return o * act(cell), cell

        return step

    fwd = make_step(*params(""))
    bwd = make_step(*params("_back")) if direction == "bidirectional" else None

    def run(env: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, h0, c0 = x(env), h0_g(env), c0_g(env)
        if bwd is None:
            rev = direction == "reverse"
            seq, (h, cell) = _run_direction(fwd, xs, (h0, c0), rev)
            return _outputs(seq, out_seq, rev), h, cell
        hid = h0.shape[-1] // 2
        seq_f, (hf, cf) = _run_direction(fwd, xs, (h0[:, :hid], c0[:, :hid]), False)
        seq_b, (hb, cb) = _run_direction(bwd, xs, (h0[:, hid:], c0[:, hid:]), True)
        seq = torch.cat([seq_f, seq_b], dim=-1)
        last = seq if out_seq else torch.cat([seq_f[-1:], seq_b[:1]], dim=-1)
        return last, torch.cat([hf, hb], -1), torch.cat([cf, cb], -1)

    return run


@kernel("gru")
def _gru(c: OpCtx) -> Run:
    x, h0 = c.get("x"), c.get("initial_h")
    w_ih, w_hh = c.tensor("weight_ih").float(), c.tensor("weight_hh").float()
    hidden = w_hh.shape[1]
    b = c.tensor("bias").float() if c.has("bias") else torch.zeros(3 * hidden)
    b_in = c.tensor("input_bias").float() if c.has("input_bias") else torch.zeros(3 * hidden)
    reset_after = bool(c.bool("reset_after", False))
    direction = c.str("direction", "forward")
    if direction not in ("forward", "reverse"):
        raise c.unsupported(f"direction {direction!r}")
    out_seq = bool(c.bool("output_sequence", False))
    ract = _activation(c, c.str("recurrent_activation", "sigmoid"))
    act = _activation(c, c.str("activation", "tanh"))
    b_r, b_o, b_z = b.chunk(3)
    w_hr, w_ho, w_hz = w_hh.chunk(3)

    def step(xt: torch.Tensor, st: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        (h,) = st
        xr, xo, xz = F.linear(xt, w_ih, b_in).chunk(3, dim=-1)
        r = ract(xr + F.linear(h, w_hr) + b_r)
        z = ract(xz + F.linear(h, w_hz) + b_z)
        if reset_after:  # r applies to the hidden-side product and its bias
            o = act(xo + r * (F.linear(h, w_ho) + b_o))
        else:
            o = act(xo + r * F.linear(h, w_ho) + b_o)
        return ((1 - z) * o + z * h,)

    def run(env: list) -> tuple[torch.Tensor, torch.Tensor]:
        seq, (h,) = _run_direction(step, x(env), (h0(env),), direction == "reverse")
        return _outputs(seq, out_seq, direction == "reverse"), h

    return run
