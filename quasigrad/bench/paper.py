"""The papers' own settings and figures, kept beside the benchmarks that print them.

Every figure here is the paper's, transcribed from the paper's tables (a test parses the
reference copy of those tables, `tests/data/published-tables.md`, and checks that each value
here equals it). Wherever one is printed it is labelled as the paper's, never as ours.

Estimators are keyed by the registry names the benchmarks use (`"stgs"`, `"gumbel_rao"`,
`"gst"`, `"st"`, `"reinmax"`, ...); a value with an error is `(mean, std)`.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ["CATEGORICAL_CONFIGS", "PAPER_TABLE2", "PAPER_TABLE2_AVG", "PAPER_TABLE1_LISTOPS", "PAPER_TABLE4_NAS",
           "PAPER_TABLE6", "TABLE6_QUOTED", "PAPER_EFFICIENCY", "PAPER_POLYNOMIAL_SPREAD", "PAPER_NEURALSORT_EXACT",
           "PAPER_SETTINGS", "DISPLAY_NAMES", "display_name", "by_estimator"]

MeanStd = Tuple[float, float]

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

#: How much training the papers' figures come from (what "a fraction of the paper's training" is
#: measured against).
PAPER_SETTINGS: Dict[str, Dict[str, Any]] = {
    "table2": {"epochs": 160, "train_images": 60000, "batch_size": 100, "seeds": 10},
    "table6": {"steps": 1_000_000, "train_images": 50000, "batch_size": 100, "lr": 3e-4, "optimizer": "radam"},
    "polynomial": {"steps": 8000, "seeds": 10, "batch": 64, "num_vars": 128, "lr": 1e-3},
    "neuralsort": {"steps": 100_000},
    # Table 1 as the paper's code runs it (ReinMax repository, listops/README.md): released ListOps
    # sentences of fewer than 100 tokens, 300-dimensional model, batch 16, RAdam, τ 1.1.
    "table1": {"epochs": 20, "train_sentences": 90_000, "hidden": 300, "max_length": 99, "batch": 16, "lr": 7e-4,
               "optimizer": "radam", "tau": 1.1},
    # Table 4: GDAS's search on CIFAR-10 (250 epochs), the found cell's accuracies read from NATS-Bench.
    "table4": {"search_epochs": 250, "search_data": "CIFAR-10", "accuracies": "NATS-Bench (200-epoch training)"},
}

# ReinMax (Liu, Dong, Liu, Yu, Gao 2023), Table 2: training −ELBO on MNIST, categorical VAE,
# 160 epochs, by estimator and configuration C×L.
PAPER_TABLE2: Dict[str, Dict[str, MeanStd]] = {
    "stgs": {"8x4": (126.85, 0.85), "4x24": (101.32, 0.43), "8x16": (99.32, 0.33), "16x12": (100.09, 0.32),
             "64x8": (104.00, 0.41), "10x30": (99.63, 0.63)},
    "gumbel_rao": {"8x4": (125.94, 0.71), "4x24": (99.96, 0.25), "8x16": (99.58, 0.31), "16x12": (102.54, 0.48),
                   "64x8": (112.34, 0.48), "10x30": (102.02, 0.18)},
    "gst": {"8x4": (126.35, 1.24), "4x24": (101.49, 0.44), "8x16": (98.29, 0.66), "16x12": (98.12, 0.57),
            "64x8": (102.53, 0.57), "10x30": (98.64, 0.33)},
    "st": {"8x4": (135.53, 0.31), "4x24": (112.03, 0.03), "8x16": (112.94, 0.32), "16x12": (113.31, 0.43),
           "64x8": (113.90, 0.28), "10x30": (112.63, 0.34)},
    "reinmax": {"8x4": (124.66, 0.88), "4x24": (99.77, 0.45), "8x16": (97.70, 0.39), "16x12": (98.06, 0.53),
                "64x8": (100.71, 0.70), "10x30": (98.37, 0.44)},
}
#: Table 2's AVG column (the mean over the six configurations).
PAPER_TABLE2_AVG: Dict[str, float] = {"stgs": 105.20, "gumbel_rao": 107.06, "gst": 104.25, "st": 116.72,
                                      "reinmax": 103.21}

# Table 1: ListOps accuracy (unsupervised parsing with a Gumbel tree model), per cent.
PAPER_TABLE1_LISTOPS: Dict[str, Dict[str, MeanStd]] = {
    "stgs": {"valid": (66.95, 3.05), "test": (67.30, 2.50)},
    "gumbel_rao": {"valid": (66.53, 0.58), "test": (66.53, 0.86)},
    "gst": {"valid": (66.28, 0.52), "test": (66.30, 0.62)},
    "st": {"valid": (66.51, 0.76), "test": (66.26, 0.48)},
    "reinmax": {"valid": (67.65, 1.25), "test": (68.07, 1.18)},
}

# Table 4: NATS-Bench accuracy of GDAS with STGS (quoted by the paper from Dong et al. 2020) and
# with ReinMax, per cent, by data set and split.
PAPER_TABLE4_NAS: Dict[str, Dict[str, Dict[str, MeanStd]]] = {
    "stgs": {"cifar10": {"valid": (89.68, 0.72), "test": (93.23, 0.58)},
             "cifar100": {"valid": (68.35, 2.71), "test": (68.17, 2.50)},
             "imagenet16-120": {"valid": (39.55, 0.00), "test": (39.40, 0.00)}},
    "reinmax": {"cifar10": {"valid": (90.01, 0.12), "test": (93.44, 0.23)},
                "cifar100": {"valid": (69.29, 2.34), "test": (69.41, 2.24)},
                "imagenet16-120": {"valid": (41.47, 0.79), "test": (42.03, 0.41)}},
}

# Table 6: training −ELBO of the 2×200 Bernoulli VAE, by K (evaluations of f per step), data set
# and estimator; an estimator absent for a K has no value in the table.
PAPER_TABLE6: Dict[int, Dict[str, Dict[str, MeanStd]]] = {
    3: {"mnist": {"relax": (101.99, 0.04), "arms": (100.84, 0.14), "double_cv": (100.94, 0.09),
                  "rodeo": (100.46, 0.13), "reinmax": (97.83, 0.36)},
        "fashion_mnist": {"relax": (237.74, 0.12), "arms": (237.05, 0.12), "double_cv": (237.40, 0.11),
                          "rodeo": (236.88, 0.12), "reinmax": (234.53, 0.42)},
        "omniglot": {"relax": (115.70, 0.08), "arms": (115.32, 0.07), "double_cv": (115.06, 0.12),
                     "rodeo": (115.01, 0.05), "reinmax": (107.51, 0.42)}},
    2: {"mnist": {"disarm": (102.75, 0.08), "double_cv": (102.14, 0.06), "rodeo": (101.89, 0.17),
                  "reinmax": (98.05, 0.29)},
        "fashion_mnist": {"disarm": (237.68, 0.13), "double_cv": (237.55, 0.16), "rodeo": (237.44, 0.09),
                          "reinmax": (234.86, 0.33)},
        "omniglot": {"disarm": (116.50, 0.04), "double_cv": (116.39, 0.10), "rodeo": (115.93, 0.06),
                     "reinmax": (107.79, 0.27)}},
}
#: Table 6's baselines that the ReinMax paper quotes from Shi et al. (2022, RODEO).
TABLE6_QUOTED = frozenset({"relax", "arms", "disarm", "double_cv", "rodeo"})

# The efficiency table: time per epoch and peak memory, as printed. "qp": polynomial programming,
# 128 binary latents, 512 samples per batch; "mnist_vae": 10 categories × 30 latents.
PAPER_EFFICIENCY: Dict[str, Dict[str, Dict[str, Any]]] = {
    "qp": {"reinmax": {"seconds": 0.2, "memory": "6.5 MB"}, "st": {"seconds": 0.2, "memory": "5.0 MB"},
           "stgs": {"seconds": 0.2, "memory": "5.5 MB"}, "gst": {"seconds": 0.2, "memory": "8.0 MB"},
           "gumbel_rao:k=100": {"seconds": 0.8, "memory": "0.3 GB"},
           "gumbel_rao:k=300": {"seconds": 2.2, "memory": "1 GB"},
           "gumbel_rao:k=1000": {"seconds": 6.6, "memory": "3 GB"}},
    "mnist_vae": {"reinmax": {"seconds": 5.2, "memory": "13 MB"}, "st": {"seconds": 5.2, "memory": "13 MB"},
                  "stgs": {"seconds": 5.2, "memory": "13 MB"}, "gst": {"seconds": 5.2, "memory": "13 MB"},
                  "gumbel_rao:k=100": {"seconds": 5.2, "memory": "76 MB"},
                  "gumbel_rao:k=300": {"seconds": 5.2, "memory": "0.2 GB"},
                  "gumbel_rao:k=1000": {"seconds": 5.4, "memory": "0.6 GB"}},
}

#: Polynomial programming, second target: the setting and the paper's claim (in words; the paper
#: gives it as a figure, not a table).
PAPER_POLYNOMIAL_SPREAD: Dict[str, Any] = {
    "target": "c_i = (i - 0.5)/L, i = 1..L",
    "objective": "min E |D - c|_p^p / L, theta in R^{L x 2}",
    "claim": ("REINFORCE-style estimators do well on the simple target (c = 0.45); ReinMax handles the "
              "harder spread target better, and converges more slowly on simple ones because of its bias"),
}

# NeuralSort (Grover, Wang, Zweig, Ermon 2019), large-MNIST sorting, deterministic NeuralSort:
# proportion of sequences sorted exactly.
PAPER_NEURALSORT_EXACT: Dict[int, float] = {3: 0.930, 5: 0.837}

DISPLAY_NAMES = {"st": "ST", "stgs": "STGS", "gumbel_rao": "GR-MCK", "gst": "GST-1.0", "reinmax": "ReinMax",
                 "zgr": "ZGR", "darn": "DARN", "rloo": "RLOO", "disarm": "DisARM", "relax": "RELAX",
                 "double_cv": "Double CV", "reinforce": "REINFORCE", "arms": "ARMS", "rodeo": "RODEO"}


def by_estimator(table: Dict[str, Any], name: str) -> Any:
    """`table[name]`, looking `name` up by its spelling as typed, then by the spelling of the
    same registered estimator that `table` uses (`gumbel_softmax` finds an `stgs` entry);
    `None` when absent."""
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
    """The name an estimator has in the papers' tables (`stgs` → `STGS`); `name` itself
    when it has none."""
    return by_estimator(DISPLAY_NAMES, name) or name
