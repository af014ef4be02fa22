"""Models the CLI tests load as module:callable (run with this folder as the working directory)."""

import torch


class Attention(torch.nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.emb = torch.nn.Embedding(50, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)

    def forward(self, ids):
        q, k, v = self.qkv(self.emb(ids)).chunk(3, -1)
        return torch.softmax(q @ k.transpose(-1, -2) * 0.25, -1) @ v


def make_attention():
    return Attention()


class Median(torch.nn.Module):
    def forward(self, x):  # IREE 3.9 cannot compile aten.median
        return torch.softmax(torch.median(x, -1, keepdim=True).values * x, -1)


def make_median():
    return Median()


def not_a_module():
    return 42
