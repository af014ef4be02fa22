"""The installed wheel, run from outside the checkout (`make test-wheel`): export and run under `auto`,
`inplace` and `split`, the package data present, the command line listing its models."""

import os
import subprocess
import sys

import torch

import fxsoftmax
from fxsoftmax.auto.chooser import PACKAGED
from fxsoftmax.lowering.inplace import TEMPLATE

# installed into this environment (not the checkout's source, wherever the checkout lies)
assert "site-packages" in fxsoftmax.__file__ and fxsoftmax.__file__.startswith(sys.prefix + os.sep), (fxsoftmax.__file__, sys.prefix)
assert os.path.isfile(PACKAGED) and "stream.executable" in TEMPLATE.template
x = torch.randn(8, 128)
for policy in ("auto", "inplace", "split"):
    art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy=policy)
    err = (art(x) - torch.softmax(x, -1)).abs().max().item()
    assert err <= 1e-5 and [s.status for s in art.sites] == ["rewritten"], (policy, err, art.sites)
    print(f"{policy}: plan {art.sites[0].plan}, max |error| {err:.1e}")
listed = subprocess.run([sys.executable, "-m", "fxsoftmax", "export", "--list-models"], capture_output=True, text=True, check=True).stdout
assert "bert-tiny" in listed and "llama-2048" in listed, listed
print(f"fxsoftmax {fxsoftmax.__file__}: wheel smoke test passed")
