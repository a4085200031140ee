"""Time formulations of N members' convolutions (forward + backward) for the ensemble paths on the CPU.

Usage: ``python benchmarks/bench_conv_formulations.py [--n 16 --batch 64 --width 32 --threads 1 --reps 10]``

The two costly convolutions of ``small_cnn`` on digits (8x8 input, width w: a 3x3 stride-1 conv w -> 2w and a
3x3 stride-2 conv 2w -> 2w, padding 1), for N members with their own weights and batches, each formulation
checked against ``F.conv2d`` in float64 (forward, max abs error printed) and then timed in float32 (process CPU
time per member of one forward + backward, input and weight gradients; inputs, weights and output gradients
already in each formulation's own layout, as a training step keeps them between layers):

* ``onednn``: one ``F.conv2d`` per member, NCHW (what the loop runs);
* ``onednn-cl``: the same in channels-last (NHWC) memory layout (what the ``fused`` path runs);
* ``grouped`` / ``grouped-cl``: one convolution with ``groups = N`` over the members' concatenated channels;
* ``im2col``: ``F.unfold`` patches and one ``torch.bmm`` over the members;
* ``winograd-2`` / ``winograd-4`` (stride-1 conv only): Winograd's minimal filtering F(2x2, 3x3) and
  F(4x4, 3x3) as in A. Lavin and S. Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016,
  §4-5: ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`` per tile, the matrices ``_BT``, ``_G``, ``_AT`` below being the
  paper's Bᵀ, G, Aᵀ. The 2-D transforms are applied as Kronecker products (``kron(Bᵀ, Bᵀ)`` on the
  flattened tile) and the elementwise products, summed over input channels, as one ``torch.bmm`` over
  (member, transform position): 16 (F(2,3)) or 36 (F(4,3)) matrix products of ``[out, in] @ [in, tiles]``.
  Autograd gives the backward (again in the transform domain). 2.25x / 4x fewer multiplications than the
  direct convolution in the products, before the transforms.

What it showed (docs/ensembles.md): the direct oneDNN kernels already run near the core's peak, channels-last
is the fastest of all, and every batched-matmul formulation, Winograd included, is slower because
``torch.bmm`` over many small products runs at a fraction of oneDNN's rate on this CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

_BT = {2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
       4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
           [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]}  # fmt: skip
_G = {2: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
      4: [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
          [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]}  # fmt: skip
_AT = {2: [[1, 1, 1, 0], [0, 1, -1, -1]],
       4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]}  # fmt: skip

Conv = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # x [N, B, C, H, W], w [N, O, C, 3, 3] -> [N, B, O, H', W']


class OneDNN:
    """``F.conv2d`` on inputs already in its own layout, as a training step keeps them between layers: per member
    (``[B, C, H, W]`` each) or one grouped convolution (``[B, N*C, H, W]``), NCHW or channels-last. ``native``
    / ``stacked`` convert from / to the ``[N, B, C, H, W]`` stack outside the timed region."""

    def __init__(self, stride: int, grouped: bool, cl: bool) -> None:
        self.stride, self.grouped = stride, grouped
        self.fmt = torch.channels_last if cl else torch.contiguous_format

    def native(self, x: torch.Tensor, w: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        f = self.fmt
        if not self.grouped:
            return [t.contiguous(memory_format=f) for t in x], [t.contiguous(memory_format=f) for t in w]
        n, b, c = x.shape[:3]
        xw = x.transpose(0, 1).reshape(b, n * c, *x.shape[3:]).contiguous(memory_format=f)
        return [xw], [w.reshape(-1, *w.shape[2:]).contiguous(memory_format=f)]

    def stacked(self, ys: list[torch.Tensor], n: int) -> torch.Tensor:
        if not self.grouped:
            return torch.stack(ys)
        return ys[0].reshape(ys[0].shape[0], n, -1, *ys[0].shape[2:]).transpose(0, 1)

    def __call__(self, xs: list[torch.Tensor], ws: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.grouped:
            return [F.conv2d(x, w, stride=self.stride, padding=1) for x, w in zip(xs, ws, strict=True)]
        groups = xs[0].shape[1] // ws[0].shape[1]
        return [F.conv2d(xs[0], ws[0], stride=self.stride, padding=1, groups=groups)]


class Stacked:
    """A formulation on the ``[N, B, C, H, W]`` stack itself (im2col, Winograd)."""

    def __init__(self, conv: Conv) -> None:
        self.conv = conv

    def native(self, x: torch.Tensor, w: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [x], [w]

    def stacked(self, ys: list[torch.Tensor], n: int) -> torch.Tensor:
        return ys[0]

    def __call__(self, xs: list[torch.Tensor], ws: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.conv(xs[0], ws[0])]


def im2col(stride: int) -> Conv:
    def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, b, c, h, wd = x.shape
        cols = F.unfold(x.reshape(n * b, c, h, wd), 3, padding=1, stride=stride)  # [n*b, c*9, L]
        L = cols.shape[-1]
        cols = cols.view(n, b, c * 9, L).transpose(1, 2).reshape(n, c * 9, b * L)
        y = torch.bmm(w.reshape(n, -1, c * 9), cols)  # [n, O, b*L]
        ho = (h + 2 - 3) // stride + 1
        return y.view(n, -1, b, ho, L // ho).transpose(1, 2)

    return conv


def winograd(m: int) -> Conv:
    def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, b, c, h, wd = x.shape
        o, t = w.shape[1], m + 2
        bt, g, at = (torch.tensor(a, dtype=x.dtype) for a in (_BT[m], _G[m], _AT[m]))
        kb, kg, ka = torch.kron(bt, bt), torch.kron(g, g), torch.kron(at, at)  # 2-D transforms on flat tiles
        th, tw = h // m, wd // m
        xp = F.pad(x, (1, 1, 1, 1))  # [n, b, c, h+2, w+2]: tiles of t x t at stride m
        tiles = xp.unfold(3, t, m).unfold(4, t, m)  # [n, b, c, th, tw, t, t]
        d = tiles.permute(0, 5, 6, 2, 1, 3, 4).reshape(n, t * t, -1)  # [n, t*t, c*b*th*tw]
        v = torch.matmul(kb, d).view(n * t * t, c, -1)  # Bᵀ d B
        u = torch.matmul(kg, w.reshape(n, o * c, 9).transpose(1, 2)).view(n * t * t, o, c)  # G g Gᵀ
        prod = torch.bmm(u, v).view(n, t * t, -1)  # Σ_c (G g Gᵀ) ⊙ (Bᵀ d B), per position
        y = torch.matmul(ka, prod).view(n, m, m, o, b, th, tw)  # Aᵀ [...] A
        return y.permute(0, 4, 3, 5, 1, 6, 2).reshape(n, b, o, h, wd)

    return conv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="members")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=32, help="small_cnn width (convs w -> 2w, 2w -> 2w)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, b, w = args.n, args.batch, args.width
    print(f"N={n} batch={b} width={w} threads={torch.get_num_threads()} torch {torch.__version__}  "
          f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    layers = {"conv 3x3 stride 1 (w -> 2w)": (1, w, 2 * w), "conv 3x3 stride 2 (2w -> 2w)": (2, 2 * w, 2 * w)}
    for name, (stride, c, o) in layers.items():
        forms: dict[str, OneDNN | Stacked] = {
            "onednn": OneDNN(stride, False, False), "onednn-cl": OneDNN(stride, False, True),
            "grouped": OneDNN(stride, True, False), "grouped-cl": OneDNN(stride, True, True),
            "im2col": Stacked(im2col(stride))}  # fmt: skip
        if stride == 1:
            forms |= {"winograd-2": Stacked(winograd(2)), "winograd-4": Stacked(winograd(4))}
        g = torch.Generator().manual_seed(0)
        x64 = torch.randn(n, b, c, 8, 8, generator=g, dtype=torch.float64)
        w64 = torch.randn(n, o, c, 3, 3, generator=g, dtype=torch.float64)
        ref = torch.stack([F.conv2d(x64[i], w64[i], stride=stride, padding=1) for i in range(n)])
        gy = torch.randn(ref.shape, generator=g)
        macs = 3 * b * o * c * 9 * ref.shape[-1] * ref.shape[-2]  # forward + both backward products, per member
        print(f"{name}: {macs / 1e6:.0f} M multiply-adds per member (direct)")
        for label, form in forms.items():
            err = (form.stacked(form(*form.native(x64, w64)), n) - ref).abs().max().item()
            xs, ws = form.native(x64.float(), w64.float())
            leaves = [t.requires_grad_() for t in xs + ws]
            gys = [t.contiguous() for t in form.native(gy, w64)[0]]
            if isinstance(form, OneDNN):
                gys = [t.contiguous(memory_format=form.fmt) for t in gys]

            def step(form=form, xs=xs, ws=ws, gys=gys, leaves=leaves) -> None:
                for t in leaves:
                    t.grad = None
                torch.autograd.backward(form(xs, ws), gys)

            for _ in range(2):
                step()
            c0 = time.process_time()
            for _ in range(args.reps):
                step()
            s = (time.process_time() - c0) / args.reps / n
            print(f"  {label:>11}: {s * 1e3:7.2f} ms per member (fwd+bwd)  {2 * macs / s / 1e9:6.1f} GFLOP/s "
                  f"direct-equivalent  max |err| float64 {err:.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
