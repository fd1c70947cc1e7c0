"""PyTorch eager CPU baseline for `unpersonal-train bench`.

This script times the same small residual CNN classifier and optimiser
setup as `unpersonal-train bench`, so the two throughput numbers can be
compared directly.

Network (NCHW float32, 28x28 grayscale input, 10 classes):
  stem   Conv2d(1,32,3,p=1,no bias) -> GroupNorm(8,32) -> ReLU
  down1  Conv2d(32,48,3,s=2,p=1,no bias) -> GroupNorm(8,48) -> ReLU      (14x14)
  block1 residual, 48 ch: a = conv3x3 -> GN -> ReLU; b = conv3x3 -> GN(gain=0);
         out = ReLU(x + b(a(x)))
  down2  Conv2d(48,96,3,s=2,p=1,no bias) -> GroupNorm(8,96) -> ReLU      (7x7)
  block2 residual, 96 ch (same as block1)
  head   global average pool over H,W -> Linear(96,10)
Loss: cross-entropy with one-hot (soft) targets, mean over the batch.

One training step = forward + backward + AdamW(lr=2e-3, betas=(0.9,0.999),
eps=1e-8; weight_decay=0.05 on params with ndim >= 2, 0 on biases and
GroupNorm params) + an EMA of all parameters (decay 0.999) updated every step.

Data is one synthetic, deterministic batch created once (values in [-1, 1],
label of sample i is i % 10, one-hot), so only compute is timed.

Setup (from the repository root; on an NVIDIA GPU pass --device cuda to a CUDA build of torch):
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install torch

Run:
  .venv-torch/bin/python trainer/benches/pytorch_classifier.py --batch 128
  .venv-torch/bin/python trainer/benches/pytorch_classifier.py --batch 128 --json
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import harness

NUM_CLASSES = 10
GROUPS = 8


def conv_gn(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(GROUPS, cout),
    )


class ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.a = conv_gn(ch, ch)
        self.b = conv_gn(ch, ch)
        # Zero-initialised gain on the last GroupNorm: the block starts as identity.
        nn.init.zeros_(self.b[1].weight)

    def forward(self, x):
        return F.relu(x + self.b(F.relu(self.a(x))))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_gn(1, 32)
        self.down1 = conv_gn(32, 48, stride=2)
        self.block1 = ResBlock(48)
        self.down2 = conv_gn(48, 96, stride=2)
        self.block2 = ResBlock(96)
        self.head = nn.Linear(96, NUM_CLASSES)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.down1(x))
        x = self.block1(x)
        x = F.relu(self.down2(x))
        x = self.block2(x)
        x = x.mean(dim=(2, 3))
        return self.head(x)


def synthetic_batch(batch):
    n = batch * 28 * 28
    idx = torch.arange(n, dtype=torch.float32)
    x = torch.sin(idx * 0.0137 + 0.5).reshape(batch, 1, 28, 28).contiguous()  # in [-1, 1]
    labels = torch.arange(batch) % NUM_CLASSES
    y = F.one_hot(labels, NUM_CLASSES).to(torch.float32)
    return x, y


def main():
    args = harness.arguments(__doc__.splitlines()[0], batch=128)
    device = torch.device(args.device)
    model = Classifier().to(device).train()
    params = [q for q in model.parameters() if q.requires_grad]
    x, y = (t.to(device) for t in synthetic_batch(args.batch))
    # Cross-entropy against one-hot (soft) targets, mean over the batch.
    step = harness.training_step(params, lr=2e-3, ema_decay=0.999, loss_of=lambda: F.cross_entropy(model(x), y))
    harness.report("classifier", args, step, sum(q.numel() for q in params))


if __name__ == "__main__":
    main()
