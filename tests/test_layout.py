"""The shape of the package: every public name that was importable stays importable from the
same place, no module imports from a layer above it or round in a circle, no module is over
500 lines, and every package says what it owns."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import quasigrad

PACKAGE = Path(quasigrad.__file__).parent

# Every public name of the library, by the module it is imported from (benchmark modules are
# commands, reached through ``quasigrad bench NAME``, and are not listed).
PUBLIC_API = {
    'quasigrad': [
        'bench', 'bernoulli', 'darn', 'data', 'distributions', 'em', 'exact', 'gapped_st', 'gumbel_rao',
        'gumbel_softmax', 'lab', 'nn', 'objective', 'optim', 'quant', 'registry', 'reinmax', 'sample_categorical',
        'samplers', 'sort', 'st', 'vae', 'zgr'
    ],
    'quasigrad.bench': [
        'BENCHMARKS'
    ],
    'quasigrad.bernoulli': [
        'darn', 'gapped_st', 'gumbel_rao', 'gumbel_softmax', 'reinmax', 'sample', 'st', 'zgr'
    ],
    'quasigrad.categorical': [
        'darn', 'gapped_st', 'gumbel_rao', 'gumbel_softmax', 'reinmax', 'st', 'zgr'
    ],
    'quasigrad.check': [
        'add_arguments', 'problems', 'relative_bias', 'run'
    ],
    'quasigrad.data': [
        'DataError', 'MNIST', 'MNIST_FILES', 'load_mnist', 'mnist_dir_candidates'
    ],
    'quasigrad.distributions': [
        'Bernoulli', 'OneHotCategorical', 'estimator_sampler'
    ],
    'quasigrad.em': [
        'BernoulliMixture', 'check_binary', 'elbo', 'fit_em', 'fit_gradient'
    ],
    'quasigrad.exact': [
        'TooManyOutcomesError', 'estimator_expectation', 'expectation', 'gradient', 'num_outcomes'
    ],
    'quasigrad.lab': [
        'Problem', 'Spec', 'estimator_gradients', 'format_quality', 'parse_specs', 'problems', 'quality'
    ],
    'quasigrad.lab.problems': [
        'PROBLEMS', 'Problem', 'cubic', 'decoder', 'linear', 'make', 'polynomial', 'quadratic'
    ],
    'quasigrad.lab.quality': [
        'estimator_gradients', 'format_quality', 'quality'
    ],
    'quasigrad.nn': [
        'BernoulliSample', 'CategoricalSample', 'st_argmax', 'st_threshold'
    ],
    'quasigrad.objective': [
        'EMABaseline', 'LearnedBaseline', 'PathwiseError', 'REBAR', 'RELAX', 'control_variate_mlp',
        'expectation'
    ],
    'quasigrad.optim': [
        'BayesBiNN', 'MDSoftmax', 'MDTanh', 'is_binary', 'mark_binary'
    ],
    'quasigrad.quant': [
        'DoReFaQuantizer', 'FakeQuantizer', 'IntConv2d', 'IntLinear', 'IntegerWeight', 'LSQQuantizer',
        'PACTQuantizer', 'QuantConv2d', 'QuantEstimator', 'QuantLinear', 'UniformQuantizer', 'alignment_error',
        'alpha', 'ceil', 'check_in_class', 'convert', 'dorefa_activation', 'dorefa_weight', 'estimator_names',
        'estimator_table', 'fake_quantize', 'fake_quantize_per_channel', 'floor', 'get_estimator',
        'grad_scale', 'heaviside', 'integer_weight', 'least_squares_trend', 'lsq', 'pact', 'quantize_model',
        'quantized_agreement', 'quantized_weights', 'register_estimator', 'remap', 'round', 'sign',
        'ste_twin', 'ternary', 'uniform_quantize'
    ],
    'quasigrad.quant.equivalence': [
        'alignment_error', 'alpha', 'check_in_class', 'least_squares_trend', 'quantized_agreement',
        'quantized_weights', 'remap', 'ste_twin'
    ],
    'quasigrad.quant.estimators': [
        'QuantEstimator', 'estimator_names', 'estimator_table', 'get_estimator', 'register_estimator'
    ],
    'quasigrad.quant.functional': [
        'ceil', 'dorefa_activation', 'dorefa_weight', 'fake_quantize', 'fake_quantize_per_channel', 'floor',
        'grad_scale', 'heaviside', 'lsq', 'pact', 'round', 'sign', 'ternary', 'uniform_quantize'
    ],
    'quasigrad.quant.integer': [
        'IntConv2d', 'IntLinear', 'IntegerWeight', 'convert', 'integer_weight', 'pack', 'unpack'
    ],
    'quasigrad.quant.modules': [
        'DoReFaQuantizer', 'FakeQuantizer', 'LSQQuantizer', 'PACTQuantizer', 'QuantConv2d', 'QuantLinear',
        'UniformQuantizer', 'quantize_model'
    ],
    'quasigrad.registry': [
        'EstimatorInfo', 'UnknownEstimatorError', 'entries', 'get', 'names', 'register', 'resolve_names',
        'table', 'update'
    ],
    'quasigrad.samplers': [
        'DiscreteLangevin', 'EnergyModel', 'Gibbs', 'GibbsWithGradients', 'Ising', 'RBM', 'SAMPLERS',
        'effective_sample_size', 'make_sampler', 'stationary_distribution'
    ],
    'quasigrad.sort': [
        'GumbelTopK', 'gumbel_topk', 'neural_sort', 'plackett_luce_log_prob', 'relaxed_topk', 'soft_rank',
        'soft_sort', 'soft_sort_permutation'
    ],
    'quasigrad.models.nas': [
        'FixedCell', 'FixedNetwork', 'OPS', 'SearchCell', 'SearchNetwork', 'cell_edges', 'make_op'
    ],
    'quasigrad.models.tree_lstm': [
        'GumbelTreeClassifier', 'GumbelTreeEncoder', 'TreeLSTMCell', 'TreeOutput'
    ],
    'quasigrad.vae': [
        'BernoulliVAE', 'CATEGORICAL_CONFIGS', 'CategoricalVAE', 'DISPLAY_NAMES', 'PAPER_TABLE2', 'RunSpec',
        'TrainResult', 'VAEError', 'distributed_context', 'estimator_step', 'evaluate',
        'objective_samples', 'train'
    ],
}

# The layers, lowest first. A module may import from its own group and from groups before it.
LAYERS = [
    ["_util"],
    ["registry"],
    ["estimators"],
    ["exact"],
    ["objective"],
    ["quant", "optim", "sort", "samplers", "data", "models", "em", "distributions", "nn"],
    ["lab"],
    ["bench"],
    ["cli", "__main__", "_compat", "__init__"],
]
# families of one layer that may not import each other (only lower layers); quasigrad.nn stands
# outside this set so that its modules can share quasigrad.distributions' estimator lookup
SIBLINGS_APART = {"quant", "optim", "sort", "samplers", "data", "models", "em", "distributions"}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(group: str) -> int:
    for i, layer in enumerate(LAYERS):
        if group in layer:
            return i
    raise AssertionError(f"module group {group!r} is not placed in LAYERS")


def _modules():
    out = {"quasigrad": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], "quasigrad."):
        rel = info.name.split(".")[1:]
        path = PACKAGE.joinpath(*rel)
        out[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return out


def _imports(module: str, path: Path):
    """Modules of quasigrad that ``module`` imports (top-level and inside functions)."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("quasigrad"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("quasigrad"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if importlib.util.find_spec(full.split(".")[0]) and _is_module(full) else target)
    return {m for m in found if m != module}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


MODULES = _modules()
GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_public_names_still_import(module):
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC_API[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    for name in PUBLIC_API[module]:
        exec(f"from {module} import {name}", {})


def test_no_import_goes_up_a_layer():
    bad = []
    for module, targets in GRAPH.items():
        g = _group(module)
        if g in ("__init__", "_compat"):
            continue
        for t in targets:
            tg = _group(t)
            if t == "quasigrad":
                bad.append(f"{module} imports the package root")
            elif _rank(tg) > _rank(g) or (tg != g and _rank(tg) == _rank(g) and g in SIBLINGS_APART
                                          and tg in SIBLINGS_APART):
                bad.append(f"{module} -> {t}")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = {m: {t for t in ts if t in GRAPH} for m, ts in GRAPH.items()}
    # a package's __init__ re-exports its own modules; a module importing its package's
    # __init__ (``from . import x``) resolves to the submodule, so edges to a parent package
    # are dropped
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and t in MODULES)}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_modules_are_short():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_packages_say_what_they_own():
    undocumented = [m for m, p in MODULES.items() if p.name == "__init__.py" and not ast.get_docstring(
        ast.parse(p.read_text()))]
    assert not undocumented, f"packages without a docstring: {undocumented}"
