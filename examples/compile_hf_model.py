"""torch.compile a tiny GPT-2 and BERT with the "fxsoftmax" backend and show what IREE made of each softmax.

Run: .venv/bin/python examples/compile_hf_model.py [--policy split]
Models are built from configs with random weights (nothing is downloaded).
"""

import argparse

import torch

import fxsoftmax
from fxsoftmax.tools.models import builtin_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="split", help="preset or plan string")
    args = parser.parse_args()

    for name in ("gpt2-tiny", "bert-tiny"):
        tm = builtin_model(name, attn="eager")
        backend = fxsoftmax.backend(policy=args.policy, device="cpu")
        compiled = torch.compile(tm.model, backend=backend)
        with torch.no_grad():
            want = tm.output(tm.model(*tm.args, **tm.kwargs))
            got = tm.output(compiled(*tm.args, **tm.kwargs))
        print(f"== {name}: {len(backend.graphs)} compiled graph(s), max |error| vs eager {(got - want).abs().max().item():.2e}")
        for graph in backend.graphs:
            for site in graph.sites:
                print(f"   {site.name:<12} {site.module_path:<28} {site.status:<9} plan {site.plan}")
            print(fxsoftmax.inspect(graph).table())
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
