"""The papers' own settings and figures, kept beside the benchmarks that print them (always
labelled as the paper's)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ["CATEGORICAL_CONFIGS", "PAPER_TABLE2", "DISPLAY_NAMES", "display_name", "by_estimator"]


# The paper's per-configuration settings for ReinMax (ReinMax repository, mnist_vae/reinmax_C_L.sh):
# key "CxL" = categories × latents.
CATEGORICAL_CONFIGS: Dict[str, Dict[str, Any]] = {
    "8x4": dict(categories=8, latents=4, lr=5e-4, tau=1.3, optimizer="adam"),
    "4x24": dict(categories=4, latents=24, lr=5e-4, tau=1.5, optimizer="radam"),
    "8x16": dict(categories=8, latents=16, lr=7e-4, tau=1.5, optimizer="radam"),
    "16x12": dict(categories=16, latents=12, lr=7e-4, tau=1.5, optimizer="radam"),
    "64x8": dict(categories=64, latents=8, lr=5e-4, tau=1.5, optimizer="radam"),
    "10x30": dict(categories=10, latents=30, lr=5e-4, tau=1.3, optimizer="radam"),
}

# The paper's Table 2 (training −ELBO, 160 epochs, mean ± std over 10 seeds), by estimator and
# configuration. Left empty where the value could not be read from the paper in this session:
# the benchmark prints "n/a" rather than a number from memory. Fill in from the paper
# (Liu et al. 2023, Table 2) as {"reinmax": {"8x4": (mean, std), ...}, ...}.
PAPER_TABLE2: Dict[str, Dict[str, Tuple[float, float]]] = {}

DISPLAY_NAMES = {"st": "ST", "stgs": "STGS", "gumbel_rao": "GR-MCK", "gst": "GST-1.0", "reinmax": "ReinMax",
                 "zgr": "ZGR", "darn": "DARN", "rloo": "RLOO", "disarm": "DisARM", "relax": "RELAX",
                 "double_cv": "Double CV", "reinforce": "REINFORCE"}


def by_estimator(table: Dict[str, Any], name: str) -> Any:
    """``table[name]``, looking ``name`` up by its spelling as typed, then by the spelling of the
    same registered estimator that ``table`` uses (``gumbel_softmax`` finds an ``stgs`` entry);
    ``None`` when absent."""
    if name in table:
        return table[name]
    from .. import registry

    try:
        target = registry.canonical(name)
    except KeyError:
        return None
    for key, value in table.items():
        try:
            if registry.canonical(key) == target:
                return value
        except KeyError:
            continue
    return None


def display_name(name: str) -> str:
    """The name an estimator has in the papers' tables (``stgs`` → ``STGS``); ``name`` itself
    when it has none."""
    return by_estimator(DISPLAY_NAMES, name) or name
