"""FX passes: find every softmax form and rewrite each site per its Plan."""

from .decompose import PassResult, decompose_softmax
from .sites import SiteReport, SoftmaxSite, find_softmax_sites

__all__ = ["PassResult", "SiteReport", "SoftmaxSite", "decompose_softmax", "find_softmax_sites"]
