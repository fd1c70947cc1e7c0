"""PyTorch eager baseline for `unpersonal-train bench --model denoiser`.

The same network, loss and optimiser as the trainer's denoiser step (trainer/src/models/
denoiser.rs, trainer/src/nn.rs, trainer/src/step.rs), so the two throughput numbers compare
directly; the parameter count printed must equal the trainer's (1,134,017 at the defaults).

Network (NCHW float32, 28x28 grayscale, condition of 96):
  EDM preconditioning c_skip, c_out, c_in, c_noise = ln(sigma)/4 (sigma_data 0.5)
  embedding: cos/sin of c_noise at 32 geometric frequencies 0.1..100 -> Linear(64,128) ->
    SiLU -> Linear(128,128); plus Linear(96,128) of the masked condition (times the mask),
    plus a learned null embedding times (1 - mask); SiLU
  U-Net widths 32, 64, 64, one residual block per level (two in the decoder, each after a
    concatenated skip), self-attention (one head) at the 7x7 level and in the middle,
    GroupNorm(8), stride-2 convolutions down, nearest upsampling up
  residual block: GN -> SiLU -> conv3x3 -> GN * (1 + scale) + shift (from the embedding)
    -> SiLU -> conv3x3 (zero-initialised), plus a 1x1 convolution on the skip when widths differ
Loss: mean((F(c_in x; emb) - (y - c_skip x) / c_out)^2) with x = y + sigma * noise.
One step = forward + backward + AdamW(lr=1e-3, betas=(0.9,0.999), eps=1e-8; weight_decay=0.05
on parameters with ndim >= 2) + an EMA of all parameters (decay 0.99) updated every step.

Data: one synthetic, deterministic batch made once (so only compute is timed).

Setup (from the repository root; on an NVIDIA GPU pass --device cuda to a CUDA build of torch):
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install torch numpy

Run:
  .venv-torch/bin/python trainer/benches/pytorch_denoiser.py --batch 64 --threads 2
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import harness

GROUPS = 8
WIDTHS = (32, 64, 64)
ATTENTION = (2,)
EMBED = 128
CONDITION = 96
SIGMA_DATA = 0.5


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm0 = nn.GroupNorm(GROUPS, cin, eps=1e-5)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(EMBED, 2 * cout)
        self.norm1 = nn.GroupNorm(GROUPS, cout, eps=1e-5)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv1.weight)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm1(h) * (1 + scale) + shift
        h = self.conv1(F.silu(h))
        return (self.skip(x) if self.skip is not None else x) + h


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, c, eps=1e-5)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=2)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=2)
        out = self.proj(weights @ v).transpose(1, 2).reshape(b, c, h, w)
        return x + out


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        half = EMBED // 4
        self.register_buffer("freqs", 0.1 * 1000.0 ** (torch.arange(half) / (half - 1)))
        self.noise0 = nn.Linear(2 * half, EMBED)
        self.noise1 = nn.Linear(EMBED, EMBED)
        self.condition = nn.Linear(CONDITION, EMBED)
        self.null = nn.Parameter(torch.randn(EMBED) * 0.1)
        self.input = nn.Conv2d(1, WIDTHS[0], 3, padding=1)
        self.down = nn.ModuleList()
        c = WIDTHS[0]
        skips = [c]
        for level, w in enumerate(WIDTHS):
            blocks = nn.ModuleList([ResBlock(c, w)])
            c = w
            if level in ATTENTION:
                blocks.append(Attention(c))
            skips.append(c)
            if level + 1 < len(WIDTHS):
                blocks.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
            self.down.append(blocks)
        self.mid = nn.ModuleList([ResBlock(c, c), Attention(c), ResBlock(c, c)])
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(WIDTHS))):
            blocks = nn.ModuleList()
            for _ in range(2):
                blocks.append(ResBlock(c + skips.pop(), w))
                c = w
                blocks.append(Attention(c) if level in ATTENTION else nn.Identity())
            self.up.append(blocks)
        self.out_norm = nn.GroupNorm(GROUPS, c, eps=1e-5)
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)

    def embed(self, c_noise, condition, mask):
        angles = c_noise[:, None] * self.freqs[None, :]
        pos = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        noise = self.noise1(F.silu(self.noise0(pos)))
        m = mask[:, None]
        cond = self.condition(condition * m) * m
        return F.silu(noise + cond + self.null * (1 - m))


def unet(model, x_in, emb):
    h = model.input(x_in)
    skips = [h]
    for level, blocks in enumerate(model.down):
        i = 0
        h = blocks[i](h, emb)
        i += 1
        if level in ATTENTION:
            h = blocks[i](h)
            i += 1
        skips.append(h)
        if i < len(blocks):
            h = blocks[i](h)
            skips.append(h)
    h = model.mid[0](h, emb)
    h = model.mid[1](h)
    h = model.mid[2](h, emb)
    for n, blocks in enumerate(model.up):
        for j in range(2):
            h = blocks[2 * j](torch.cat([h, skips.pop()], dim=1), emb)
            h = blocks[2 * j + 1](h)
        if n + 1 < len(model.up):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
    return model.out(F.silu(model.out_norm(h)))


def loss_of(model, y, noise, sigma, condition, mask):
    s = sigma[:, None, None, None]
    x = y + s * noise
    total = s * s + SIGMA_DATA**2
    c_in, c_skip, c_out = 1 / total.sqrt(), SIGMA_DATA**2 / total, s * SIGMA_DATA / total.sqrt()
    emb = model.embed(torch.log(sigma) / 4, condition, mask)
    f = unet(model, x * c_in, emb)
    target = (y - c_skip * x) / c_out
    return ((f - target) ** 2).mean()


def synthetic_batch(batch, device):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(batch, 1, 28, 28, generator=g) * 2 - 1
    noise = torch.randn(batch, 1, 28, 28, generator=g)
    sigma = torch.exp(torch.randn(batch, generator=g) * 1.2 - 1.2)
    condition = torch.randn(batch, CONDITION, generator=g)
    mask = (torch.rand(batch, generator=g) > 0.1).float()
    return [t.to(device) for t in (y, noise, sigma, condition, mask)]


def main():
    args = harness.arguments(__doc__.splitlines()[0], batch=64)
    device = torch.device(args.device)
    model = Denoiser().to(device).train()
    params = [q for q in model.parameters() if q.requires_grad]
    batch = synthetic_batch(args.batch, device)
    step = harness.training_step(params, lr=1e-3, ema_decay=0.99, loss_of=lambda: loss_of(model, *batch))
    harness.report("denoiser", args, step, sum(q.numel() for q in params))


if __name__ == "__main__":
    main()
