"""UCI yacht: tuning the log L2 coefficient of a linear regression (paper figure 9).

Data: `pes.data.yacht` (standardised with all rows' statistics; 246 train / 62 validation
rows).  Inner problem: a linear model without bias, w in R^6, w_0 ~ N(0, I) drawn from the
inner-reset key, trained by full-batch SGD (learning rate ``inner_lr``, paper 1e-3) on

    L_train(w; theta) = 1/2 ||X_tr w - y_tr||^2 + 1/2 exp(theta) ||w||^2        (sums, not means)

with no horizon (the training never restarts).  The loss of one inner step is the validation
loss after it, 1/2 ||X_val w - y_val||^2, so a truncation's objective is the sum of the
validation losses after each of its K steps.  theta is a scalar (log L2 coefficient).

The optimum is computed, not assumed: SGD with a small enough step converges to the ridge
solution w*(theta) = (X_tr^T X_tr + exp(theta) I)^-1 X_tr^T y_tr, and `optimum` minimises
the validation loss of w*(theta) over a fine theta grid (float64, NumPy).  It is the
task's ``optimum`` field; ``evaluate`` logs it as ``theta_optimum`` together with
``theta_error`` = |theta - optimum| and ``val_loss_converged`` (the validation loss of
w*(theta) at the current theta).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pes.data import yacht
from pes.systems import UnrolledSystem
from pes.tasks import DatasetInfo, Task, check_param

# theta grid of `optimum`: wide enough for every initialisation of the paper, fine enough
# (spacing 1e-3) to be far below the figure's 0.05 tolerance
OPTIMUM_GRID = (-12.0, 12.0, 24001)


def _check(name, value, ok, allowed):
    check_param("uci_yacht", name, value, ok, allowed)


class Ridge(NamedTuple):
    """Closed-form validation loss of the converged inner problem, vectorised over theta."""

    eigvals: np.ndarray  # eigenvalues s of X_tr^T X_tr
    eigvecs: np.ndarray
    xty: np.ndarray  # X_tr^T y_tr
    x_val: np.ndarray
    y_val: np.ndarray

    @classmethod
    def from_data(
        cls, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
    ) -> Ridge:
        """Precompute the eigendecomposition of X_trᵀ X_tr for closed-form ridge solutions."""
        x_train = np.asarray(x_train, np.float64)
        s, v = np.linalg.eigh(x_train.T @ x_train)
        return cls(
            s,
            v,
            x_train.T @ np.asarray(y_train, np.float64),
            np.asarray(x_val, np.float64),
            np.asarray(y_val, np.float64),
        )

    def weights(self, thetas: np.ndarray) -> np.ndarray:
        """w*(theta) for every theta, shape (len(thetas), d)."""
        lam = np.exp(np.asarray(thetas, np.float64).reshape(-1, 1))
        coef = (self.eigvecs.T @ self.xty)[None, :] / (self.eigvals[None, :] + lam)
        return coef @ self.eigvecs.T

    def val_loss(self, thetas: np.ndarray) -> np.ndarray:
        """1/2 ||X_val w*(theta) - y_val||^2 for every theta."""
        resid = self.weights(thetas) @ self.x_val.T - self.y_val[None, :]
        return 0.5 * np.sum(resid**2, axis=1)


def optimum(ridge: Ridge, grid: tuple[float, float, int] = OPTIMUM_GRID) -> tuple[float, float]:
    """(theta minimising the converged validation loss on the grid, that loss).

    Raises ``ValueError`` if the minimum lies on the grid's edge (no interior optimum).
    """
    thetas = np.linspace(*grid)
    losses = ridge.val_loss(thetas)
    i = int(np.argmin(losses))
    if i in (0, len(thetas) - 1):
        raise ValueError(
            f"task 'uci_yacht': the validation loss is smallest at the edge theta={thetas[i]:g} of "
            f"the optimum grid [{grid[0]}, {grid[1]}]; there is no interior optimum"
        )
    return float(thetas[i]), float(losses[i])


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The arguments of `make` (documented there), validated when built."""

    data_source: str
    data_path: str | None
    data_url: str
    download_timeout: float
    verify_checksum: bool
    inner_lr: float
    theta_init: float

    def __post_init__(self):
        _check("data_source", self.data_source, self.data_source in yacht.SOURCES, ", ".join(yacht.SOURCES))
        lr = self.inner_lr
        _check("inner_lr", lr, isinstance(lr, (int, float)) and 0 < lr < math.inf, "a finite number > 0")
        ok = _is_real(self.theta_init) and math.isfinite(self.theta_init)
        _check("theta_init", self.theta_init, ok, "a finite number")
        timeout = self.download_timeout
        ok = isinstance(timeout, (int, float)) and 0 < timeout <= 60
        _check("download_timeout", timeout, ok, "a number in (0, 60]")
        _check("verify_checksum", self.verify_checksum, isinstance(self.verify_checksum, bool), "true, false")

    def load(self) -> yacht.YachtData:
        """The standardised data (`pes.data.yacht.load`)."""
        return yacht.load(
            self.data_source,
            path=self.data_path,
            url=self.data_url,
            timeout=self.download_timeout,
            verify_checksum=self.verify_checksum,
        )


def check_stable(inner_lr: float, ridge: Ridge) -> None:
    """Refuse an ``inner_lr`` that makes the unregularised inner SGD diverge.

    SGD on the sum loss is stable iff lr * (largest eigenvalue + exp(theta)) < 2; this checks
    the unregularised part (exp(theta) adds to it and is the outer problem's business).
    """
    s_max = float(ridge.eigvals[-1])
    allowed = f"a step below 2 / {s_max:.4g} (larger steps make the inner SGD diverge)"
    _check("inner_lr", inner_lr, inner_lr * s_max < 2.0, allowed)


class Regression(NamedTuple):
    """The inner linear regression on device arrays of the task's dtype (pure, jit-compatible)."""

    x_tr: jax.Array
    y_tr: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    inner_lr: float

    @classmethod
    def of(cls, data: yacht.YachtData, inner_lr: float, dtype) -> Regression:
        """The regression of ``data``'s training and validation rows."""
        x_tr, y_tr = jnp.asarray(data.x_train, dtype), jnp.asarray(data.y_train, dtype)
        x_val, y_val = jnp.asarray(data.x_val, dtype), jnp.asarray(data.y_val, dtype)
        return cls(x_tr, y_tr, x_val, y_val, inner_lr)

    def val_loss(self, w):
        """1/2 ||X_val w - y_val||^2."""
        return 0.5 * jnp.sum(jnp.square(self.x_val @ w - self.y_val))

    def init(self, key):
        """w_0 ~ N(0, I)."""
        return jax.random.normal(key, (self.x_tr.shape[1],), self.x_tr.dtype)

    def step(self, theta, w, key):
        """One full-batch SGD step; its loss is the validation loss after it."""
        del key  # full batch, deterministic
        grad = self.x_tr.T @ (self.x_tr @ w - self.y_tr) + jnp.exp(theta) * w
        w = w - self.inner_lr * grad
        return w, self.val_loss(w)


def converged_evaluation(ridge: Ridge, reg: Regression, theta_opt: float) -> Callable:
    """``evaluate(theta, key)``: the converged validation loss at theta and the distance to the optimum."""
    dtype = reg.x_tr.dtype
    eig_s = jnp.asarray(ridge.eigvals, dtype)
    eig_v = jnp.asarray(ridge.eigvecs, dtype)
    proj = jnp.asarray(ridge.eigvecs.T @ ridge.xty, dtype)

    def evaluate(theta, key):
        del key
        w = eig_v @ (proj / (eig_s + jnp.exp(theta)))
        return {
            "val_loss_converged": reg.val_loss(w),
            "theta_optimum": jnp.asarray(theta_opt, dtype),
            "theta_error": jnp.abs(theta - theta_opt),
        }

    return evaluate


def build(s: Settings) -> Task:
    """The task of validated settings ``s``."""
    data = s.load()
    ridge = Ridge.from_data(data.x_train, data.y_train, data.x_val, data.y_val)
    check_stable(s.inner_lr, ridge)
    theta_opt, loss_opt = optimum(ridge)
    dtype = jnp.result_type(float)
    reg = Regression.of(data, s.inner_lr, dtype)
    metadata = {
        "optimum_val_loss": loss_opt,
        "data_md5": data.md5,
        "num_val": int(reg.x_val.shape[0]),
        "inner_lr": float(s.inner_lr),
        "theta_names": ["log L2 coefficient"],
    }
    return Task(
        "uci_yacht",
        UnrolledSystem(init=reg.init, step=reg.step, horizon=None, unroll_loss="sum"),
        jnp.asarray(float(s.theta_init), dtype),
        converged_evaluation(ridge, reg, theta_opt),
        metadata,
        objective="val_sum_loss",
        optimum=theta_opt,
        dataset=DatasetInfo("uci_yacht", data.origin, int(reg.x_tr.shape[0])),
    )


def make(
    data_source: str = "auto",
    data_path: str | None = None,
    data_url: str = yacht.URL,
    download_timeout: float = yacht.DOWNLOAD_TIMEOUT_S,
    verify_checksum: bool = True,
    inner_lr: float = 1e-3,
    theta_init: float = -1.0,
) -> Task:
    """Build the task (the keyword arguments are the task's config keys; they only fill `Settings`).

    Args:
      data_source: auto | package | file | url (`pes.data.yacht`); auto = ``data_path`` if
        given, else the packaged copy.
      data_path: a local copy of ``yacht_hydrodynamics.data``.
      data_url: where ``data_source=url`` downloads from (the UCI archive by default).
      download_timeout: seconds before a download gives up.
      verify_checksum: refuse a file whose md5 or row count differs from the UCI file.
      inner_lr: SGD learning rate of the inner training (paper 1e-3).
      theta_init: initial log L2 coefficient (paper: 5, 3, 1, -1, -3, -5).
    """
    return build(Settings(**locals()))


__all__ = ["Ridge", "Settings", "build", "make", "optimum"]
