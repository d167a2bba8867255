"""A vectorized copy of Optuna's TPE Parzen estimator, for :mod:`tunelab.search._bounded_tpe`.

:class:`_FastParzenEstimator` keeps Optuna's model (kernels, bandwidths, weights and prior are built by
Optuna's own ``_ParzenEstimator.__init__``) and its random draws, and evaluates ``sample`` and ``log_pdf`` on
scipy.special for all numerical parameters at once; :func:`_check_estimator` compares it with Optuna's own
once per process and fails loudly when they differ.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from scipy import special

try:  # Optuna's private TPE internals (see tunelab.search._bounded_tpe)
    from optuna.samplers._tpe.parzen_estimator import EPS, _ParzenEstimator, _ParzenEstimatorParameters
    from optuna.samplers._tpe.sampler import default_weights
except ImportError as err:  # pragma: no cover - only with an Optuna that moved them
    raise ImportError(
        f"tunelab's vectorized Parzen estimator builds on Optuna's, which optuna {optuna.__version__} has "
        f"moved ({err}). Update tunelab/search/_parzen.py for this Optuna."
    ) from err

__all__ = ["_FastParzenEstimator", "_check_estimator"]


@functools.lru_cache(maxsize=256)
def _default_weights(n: int) -> np.ndarray:
    """Optuna's ``default_weights(n)``, computed once per ``n`` (read-only)."""
    weights = np.asarray(default_weights(n), dtype=np.float64)
    weights.setflags(write=False)
    return weights


_ESTIMATORS_CHECKED: set[_ParzenEstimatorParameters] = set()


def _check_estimator(parameters: _ParzenEstimatorParameters) -> None:
    """Once per process and settings: :class:`_FastParzenEstimator` must draw and evaluate what Optuna's own
    estimator does on a small problem with every kind of parameter, else Optuna changed its model and this
    module must follow (a few milliseconds, once)."""
    if parameters in _ESTIMATORS_CHECKED:
        return
    space: dict[str, BaseDistribution] = {
        "float": FloatDistribution(-3.0, 7.0),
        "log": FloatDistribution(1e-5, 1.0, log=True),
        "int": IntDistribution(-5, 5),
        "step": FloatDistribution(0.0, 1.0, step=0.125),
        "choice": CategoricalDistribution(["a", "b", "c"]),
    }
    observed = {
        "float": np.array([-2.5, 0.1, 0.2, 3.0, 6.9, 1.5, 4.4]),
        "log": np.array([1e-4, 3e-3, 0.5, 2e-5, 0.02, 0.9, 1e-3]),
        "int": np.array([-5.0, 0.0, 1.0, 1.0, 5.0, -2.0, 3.0]),
        "step": np.array([0.0, 0.125, 0.5, 0.5, 1.0, 0.875, 0.25]),
        "choice": np.array([0.0, 2.0, 2.0, 1.0, 0.0, 2.0, 2.0]),
    }
    for weights in (None, np.linspace(0.5, 1.0, 7)):
        ours = _FastParzenEstimator(observed, space, parameters, weights)
        optunas = _ParzenEstimator(observed, space, parameters, weights)
        drawn = ours.sample(np.random.RandomState(0), 16)
        expected = optunas.sample(np.random.RandomState(0), 16)
        same = all(np.allclose(drawn[name], expected[name], rtol=1e-6, atol=1e-12) for name in space)
        if not same or not np.allclose(ours.log_pdf(drawn), optunas.log_pdf(drawn), rtol=1e-6, atol=1e-9):
            raise RuntimeError(
                f"optuna {optuna.__version__}'s Parzen estimator no longer matches tunelab's vectorized copy "
                "of it (on a fixed check problem). Update tunelab/search/_parzen.py for this Optuna, or "
                "use optuna.samplers.TPESampler directly."
            )
    _ESTIMATORS_CHECKED.add(parameters)


# --- The Parzen estimator's two hot methods, on scipy's vectorized special functions ----------------------
#
# Optuna 5 evaluates truncated normals without scipy, with a Python call per element in its log-CDF and erf
# (and Newton iterations of those for the inverse CDF), one parameter at a time. That costs about 2 ms per
# ask even with a short history: more than the whole budget of an ask. The estimator below keeps Optuna's
# model (kernels, bandwidths, weights and prior are built by Optuna's own ``_ParzenEstimator.__init__``) and
# its random draws (the same calls on the same generator, in the same order), and evaluates only the
# sampling and the log-density, with the same formulas on scipy.special, all numerical parameters at once.
# A test checks both against Optuna's own.

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) elementwise, for a < b: the standard normal's mass in [a, b].

    The interval is mirrored onto the left where it lies right of 0 (the mass is symmetric), where Phi is
    accurate to a few ulps relative to its value, so the difference keeps its relative accuracy even for
    narrow intervals (integer bins) in a tail. Masses that underflow (more than ~37 standard deviations out)
    are computed again in log space."""
    mirrored = a > 0
    lower = np.where(mirrored, -b, a)
    upper = np.where(mirrored, -a, b)
    mass = special.ndtr(upper) - special.ndtr(lower)
    tiny = mass < 1e-300
    if tiny.any():
        log_upper = special.log_ndtr(upper[tiny])
        tail = log_upper + np.log(-np.expm1(special.log_ndtr(lower[tiny]) - log_upper))
        mass[tiny] = 1.0  # log(1) = 0, replaced below
        out = np.log(mass)
        out[tiny] = tail
        return out
    return np.log(mass)


def _truncnorm_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray, log_mass: np.ndarray) -> np.ndarray:
    """For the standard normal truncated to [a, b] (``log_mass``: its log mass there), the point below which
    it has mass ``q`` (in [0, 1)). Solves Phi(x) = Phi(a) + q * mass in log space; mirrored when a >= 0."""
    mirrored = a >= 0
    start = special.log_ndtr(np.where(mirrored, -b, a))
    with np.errstate(divide="ignore"):  # log(0) = -inf for q = 0 is the right limit
        offset = np.log(np.where(mirrored, 1.0 - q, q)) + log_mass
    x = special.ndtri_exp(np.logaddexp(start, offset))
    return np.minimum(np.maximum(np.where(mirrored, -x, x), a), b)


class _FastParzenEstimator(_ParzenEstimator):
    """Optuna's Parzen estimator, vectorized: a weighted mixture of one product kernel per observation plus
    the prior, with Optuna's bandwidths, weights and prior, built for all numerical parameters at once, and
    ``sample`` and ``log_pdf`` on scipy.special. :func:`_check_estimator` compares it with Optuna's own.

    Shapes: K kernels (observations + the prior); D numerical parameters, as rows of (D, K) arrays so that
    sums over parameters run along a middle axis, which numpy vectorizes; S samples."""

    def __init__(
        self,
        observations: dict[str, np.ndarray],
        search_space: dict[str, BaseDistribution],
        parameters: _ParzenEstimatorParameters,
        predetermined_weights: np.ndarray | None = None,
    ) -> None:
        if parameters.prior_weight < 0:
            raise ValueError(f"prior_weight must be >= 0, got {parameters.prior_weight}.")
        self._search_space = search_space
        observed = self._transform(observations).T  # (parameters, n)
        n = observed.shape[1]
        if predetermined_weights is not None:
            weights = np.asarray(predetermined_weights, dtype=np.float64)
        elif parameters.weights is default_weights:  # Optuna's default: the same few lengths at every ask
            weights = _default_weights(n)
        else:
            weights = self._call_weights_func(parameters.weights, n)
        weights = np.append(weights, parameters.prior_weight) if n else np.ones(1)
        self._weights = weights / weights.sum()  # (K,)
        self._n_params = len(search_space)
        base = np.log(self._weights)  # each kernel's log weight, less its normalizer below
        self._categorical: list[tuple[int, np.ndarray]] = []  # (column, (K, choices) log weights)
        columns, numerical = [], []
        for i, distribution in enumerate(search_space.values()):
            if isinstance(distribution, CategoricalDistribution):
                self._categorical.append(
                    (i, self._categorical_kernels(observed[i], distribution, parameters))
                )
            elif isinstance(distribution, (FloatDistribution, IntDistribution)):
                columns.append(i)
                numerical.append(distribution)
            else:
                raise TypeError(f"TPE cannot model a {type(distribution).__name__}.")
        self._columns = np.array(columns, dtype=np.int64)
        if columns:
            self._numerical_kernels(observed[self._columns], numerical, parameters)
            inv_sigma = 1.0 / self._sigma
            self._a = (self._low - self._mu) * inv_sigma  # the truncation, standardized per kernel
            self._b = (self._high - self._mu) * inv_sigma
            self._log_mass = _log_gauss_mass(self._a, self._b)  # (D, K)
            # Each kernel's density divides, for every parameter, by its mass inside the truncation, and
            # for continuous ones by the normal's sigma * sqrt(2 pi).
            continuous = ~self._stepped
            base -= self._log_mass.sum(axis=0)
            if continuous.any():
                base -= (np.log(self._sigma[continuous]) + _LOG_SQRT_2PI).sum(axis=0)
            self._cont = (continuous, self._mu[continuous], inv_sigma[continuous])
            self._disc = (self._stepped, self._mu[self._stepped], inv_sigma[self._stepped])
        self._base = base
        self._prepared: tuple[dict[str, np.ndarray], np.ndarray] | None = None

    @staticmethod
    def _categorical_kernels(
        observed: np.ndarray, distribution: CategoricalDistribution, parameters: _ParzenEstimatorParameters
    ) -> np.ndarray:
        """(K, choices) log probabilities: each observation's choice, smoothed by the prior weight spread
        evenly over the choices; the prior kernel alone is uniform."""
        n_choices = len(distribution.choices)
        if len(observed) == 0:
            return np.full((1, n_choices), -math.log(n_choices))
        n_kernels = len(observed) + 1
        weights = np.full((n_kernels, n_choices), parameters.prior_weight / n_kernels)
        weights[np.arange(len(observed)), observed.astype(np.int64)] += 1
        totals = weights.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):  # a zero prior weight leaves some choices impossible
            return np.log(weights / np.where(totals == 0, 1, totals))

    def _numerical_kernels(
        self,
        observed: np.ndarray,
        distributions: list[FloatDistribution | IntDistribution],
        parameters: _ParzenEstimatorParameters,
    ) -> None:
        """Kernels of the (D, n) ``observed`` numerical values: centred on them, each as wide as the larger
        gap to its neighbours (per parameter, the range's ends counting as neighbours), clipped to between
        a 100th of the range (fewer kernels: wider) and the range; then the prior, centred and as wide as
        the range. Log parameters in log space; stepped ones truncated half a step beyond their ends."""
        self._grid_low = np.array([[d.low] for d in distributions], dtype=np.float64)  # (D, 1)
        self._grid_high = np.array([[d.high] for d in distributions], dtype=np.float64)
        self._step = np.array([d.step or 0.0 for d in distributions], dtype=np.float64)  # (D,)
        self._is_log = np.array([d.log for d in distributions])
        self._stepped = self._step > 0
        low = self._grid_low - self._step[:, None] / 2
        high = self._grid_high + self._step[:, None] / 2
        if self._is_log.any():
            observed = observed.copy()
            observed[self._is_log] = np.log(observed[self._is_log])
            low[self._is_log], high[self._is_log] = np.log(low[self._is_log]), np.log(high[self._is_log])
        self._low, self._high = low, high
        width = high - low
        n = observed.shape[1]
        # (Plain indexing and arithmetic below: np.take_along_axis, np.put_along_axis, np.diff and np.clip
        # cost several times more in Python overhead on arrays this small.)
        order = np.argsort(observed, axis=1)
        rows = np.arange(observed.shape[0])[:, None]
        with_ends = np.concatenate([low, observed[rows, order], high], axis=1)
        gaps = with_ends[:, 1:] - with_ends[:, :-1]  # (D, n + 1)
        sorted_sigma = np.maximum(gaps[:, :-1], gaps[:, 1:])
        if not parameters.consider_endpoints and n >= 2:
            # The outermost observations ignore their gap to the range's end.
            sorted_sigma[:, 0], sorted_sigma[:, -1] = gaps[:, 1], gaps[:, -2]
        sigma = np.empty_like(sorted_sigma)
        sigma[rows, order] = sorted_sigma
        min_sigma = width / min(100.0, n + 2.0) if parameters.consider_magic_clip else EPS
        sigma = np.minimum(np.maximum(sigma, min_sigma), width)
        self._mu = np.concatenate([observed, (low + high) / 2], axis=1)  # (D, K)
        self._sigma = np.concatenate([sigma, width], axis=1)

    def sample(self, rng: np.random.RandomState, size: int) -> dict[str, np.ndarray]:
        # The same draws as Optuna's, in the same order: kernels, then one uniform per categorical
        # parameter, then one uniform per numerical parameter.
        # rng.choice(len(weights), p=weights, size=size), as numpy's legacy RandomState computes it (the same
        # draw, the same result), without its argument checks (a third of a sample's cost here).
        cdf = self._weights.cumsum()
        cdf /= cdf[-1]
        active = cdf.searchsorted(rng.random_sample(size), side="right")
        out = np.empty((size, self._n_params))
        for i, log_choice_weights in self._categorical:
            cumulative = np.cumsum(np.exp(log_choice_weights[active]), axis=-1)
            cumulative[:, -1] = 1.0
            out[:, i] = (cumulative < rng.rand(size)[:, None]).sum(axis=-1)
        if len(self._columns):
            q = rng.uniform(low=0, high=1, size=(len(self._columns), size))  # (D, S)
            x = _truncnorm_ppf(q, self._a[:, active], self._b[:, active], self._log_mass[:, active])
            x = x * self._sigma[:, active] + self._mu[:, active]
            if self._is_log.any():
                x[self._is_log] = np.exp(x[self._is_log])
            if self._stepped.any():
                # Round onto each stepped parameter's grid, which starts at its own low.
                s, low, high = self._step[self._stepped, None], self._grid_low, self._grid_high
                x[self._stepped] = np.minimum(
                    np.maximum(
                        low[self._stepped] + np.round((x[self._stepped] - low[self._stepped]) / s) * s,
                        low[self._stepped],
                    ),
                    high[self._stepped],
                )
            out[:, self._columns] = x.T
        return self._untransform(out)

    def log_pdf(self, samples_dict: dict[str, np.ndarray]) -> np.ndarray:
        prepared = self._prepared
        if prepared is not None and prepared[0] is samples_dict:
            self._prepared = None
            return prepared[1]
        return _log_pdfs([self], samples_dict)[0]

    @staticmethod
    def prepare_log_pdfs(
        estimators: Sequence[_FastParzenEstimator], samples_dict: dict[str, np.ndarray]
    ) -> None:
        """Evaluate the log-densities of several estimators of one search space at ``samples_dict`` in one
        pass (their kernels side by side); each one's next ``log_pdf(samples_dict)`` returns its own. TPE
        evaluates its two estimators at the same candidates, and this halves the numpy calls of that."""
        for estimator, values in zip(estimators, _log_pdfs(estimators, samples_dict), strict=True):
            estimator._prepared = (samples_dict, values)

    @staticmethod
    def _bin_edges(x: np.ndarray, half: float, is_log: bool) -> tuple[np.ndarray, np.ndarray]:
        """The bins of stepped values ``x`` (in log space if ``is_log``), in the kernels' space."""
        if not is_log:
            return x - half, x + half
        values = np.exp(x)
        return np.log(values - half), np.log(values + half)


def _log_pdfs(
    estimators: Sequence[_FastParzenEstimator], samples_dict: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """Each estimator's log-density at the samples (the estimators share one search space): every kernel's
    log term is computed in one (S, all kernels) array, then summed over each estimator's own kernels."""
    first = estimators[0]
    samples = first._transform(samples_dict)
    sizes = [len(e._base) for e in estimators]
    joined = np.concatenate([e._base for e in estimators]) if len(estimators) > 1 else first._base
    log_pdf = np.broadcast_to(joined, (len(samples), len(joined)))  # (S, K)
    for position, (i, _) in enumerate(first._categorical):
        weights = [e._categorical[position][1] for e in estimators]
        log_choice_weights = np.concatenate(weights, axis=0) if len(weights) > 1 else weights[0]
        log_pdf = log_pdf + log_choice_weights[:, samples[:, i].astype(np.int64)].T
    if len(first._columns):
        x = samples[:, first._columns].T  # (D, S)
        if first._is_log.any():
            x[first._is_log] = np.log(x[first._is_log])
        rows = first._cont[0]
        if rows.any():
            mu = _joined([e._cont[1] for e in estimators])
            inv_sigma = _joined([e._cont[2] for e in estimators])
            xc = x[rows]
            z = (xc[:, :, None] - mu[:, None, :]) * inv_sigma[:, None, :]  # (Dc, S, K)
            log_pdf = log_pdf - 0.5 * np.einsum("dsk,dsk->sk", z, z)
            outside = ((xc < first._low[rows]) | (xc > first._high[rows])).any(axis=0)
            if outside.any():
                log_pdf[outside] = -np.inf
        rows = first._disc[0]
        if rows.any():
            mu = _joined([e._disc[1] for e in estimators])
            inv_sigma = _joined([e._disc[2] for e in estimators])
            steps, is_log = first._step[rows], first._is_log[rows]
            stepped = x[rows]
            for d in range(len(mu)):
                # A stepped parameter's probability is its kernel's mass over the value's bin.
                left, right = first._bin_edges(stepped[d], steps[d] / 2, is_log[d])
                a = (left[:, None] - mu[d]) * inv_sigma[d]  # (S, K)
                b = (right[:, None] - mu[d]) * inv_sigma[d]
                log_pdf = log_pdf + _log_gauss_mass(a, b)
    out, start = [], 0
    for size in sizes:
        part = log_pdf[:, start : start + size]
        start += size
        top = part.max(axis=1, keepdims=True)
        top[~np.isfinite(top)] = 0.0
        with np.errstate(divide="ignore"):  # a sample outside every kernel: log(0) = -inf
            out.append(np.log(np.exp(part - top).sum(axis=1)) + top[:, 0])
    return out


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """(D, K1), (D, K2)... -> (D, K1 + K2 + ...) (the one array itself when there is one)."""
    return np.concatenate(arrays, axis=1) if len(arrays) > 1 else arrays[0]
