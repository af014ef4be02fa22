"""What the measuring scripts share: the repository root and their arguments."""

import argparse
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rounds_and_smoke(description: str, rounds: int) -> argparse.Namespace:
    """--rounds (default `rounds`) and --smoke (a tiny case, one round, nothing written)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--smoke", action="store_true", help="a tiny case, one round, nothing written")
    return ap.parse_args()
