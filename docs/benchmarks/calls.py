"""`art(x)` (torch tensors in and out, through DLPack on CPU) against the same module on-device with its
input placed once: what a call costs beyond the kernels. Run: .venv/bin/python docs/benchmarks/calls.py [ROUNDS]"""

import statistics, sys, warnings

import torch

import fxsoftmax
from fxsoftmax.machine import describe as machine
from fxsoftmax.bench.measure import round_robin

warnings.filterwarnings("ignore")
x = torch.randn(4096, 16384)
art = fxsoftmax.export(torch.nn.Softmax(-1), (x,), policy="split")
r = art.runner(); placed = [r.put(x.clone())]
calls = {"art(x)": lambda: art(x), "on-device (input placed once)": lambda: r.invoke(placed)}
ts = round_robin(calls, int(sys.argv[1]) if len(sys.argv) > 1 else 11)
m = {k: statistics.median(v) for k, v in ts.items()}
print(f"4096x16384 f32 split, all cores ({machine()['cpu']}, {machine()['cores']} cores), medians of {len(ts['art(x)'])} round-robin runs:")
for k, v in m.items(): print(f"  {k}: {v:.1f} ms")
print(f"  ratio art(x) / on-device: {m['art(x)'] / m['on-device (input placed once)']:.3f}")
y = art(x); print("  aliasing check, max err:", (y - torch.softmax(x, -1)).abs().max().item())
