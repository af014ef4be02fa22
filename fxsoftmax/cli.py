"""The `fxsoftmax` command line."""

from __future__ import annotations

import argparse
import sys
import warnings

from .policy import DEFAULT_POLICY, PRESETS


def main(argv: list[str] | None = None) -> int:
    # torch 2.13's own pytree code trips this while exporting; it is not the user's concern.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    parser = argparse.ArgumentParser(prog="fxsoftmax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="export a small attention model, run it on IREE CPU, print a table")
    demo.add_argument("--policy", default=DEFAULT_POLICY, help=f"preset ({', '.join(PRESETS)}) or plan string")
    demo.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    args = parser.parse_args(argv)

    try:
        if args.command == "demo":
            from .demo import run_demo

            print(run_demo(args.policy, args.repeat))
    except (ValueError, NotImplementedError) as e:
        print(f"fxsoftmax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
