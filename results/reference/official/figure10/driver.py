"""Drive the NRES paper's own TruncatedPESK estimator on its Lorenz task at a fixed theta.

Built exactly as its main_training.py builds them for `--application lorenz --lorenz_single_init
--horizon_length 2000 --lorenz_dt 0.005 --lorenz_init_loga 3.116 --lorenz_init_logr 3.7
--gradient_estimator TruncatedPESK --num_particles 200 --num_gradient_estimators 1 --sigma 0.04
--trunc_length W --K K` (lorenz_utils.create_task_train_test / create_truncated_step_train_test,
gradient_estimator_utils.create_gradient_estimator: burn-in = horizon, random initial iteration
= a random multiple of W, jitted). theta is never updated; the estimator's own
init_worker_state and compute_gradient_estimate are called, one estimate after another on the
same workers. Output: one CSV row per estimate (g_log_a, g_log_r).

Usage: NRES_REPO=<checkout of the NRES code> python driver.py W K N_ESTIMATES SEED OUT.csv [scan]

With a last argument `scan`, the estimator's own per-step function (TruncatedPESK._pesk_unroll)
is called inside one jax.lax.scan per estimate (and one for the burn-in) instead of its Python
loop of jitted calls; keys follow haiku's PRNGSequence exactly (split(key, 2) -> (key, subkey) per
step), and the sums/normalisation are those of compute_gradient_estimate, so the estimates are
the same numbers, only faster (checked against the loop on the first 100 estimates).
"""
import csv
import math
import os
import sys
import time

import jax

sys.path.insert(0, os.environ["NRES_REPO"])
from src.task import lorenz  # noqa: E402
from src.task_parallelization import dynamical_system_truncated_step  # noqa: E402
from src.gradient_estimators import truncated_pesk  # noqa: E402
from src.outer_trainers import gradient_learner  # noqa: E402

W, K, M, SEED, OUT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
SCAN = len(sys.argv) > 6 and sys.argv[6] == "scan"
T = 2000
task = lorenz.Lorenz_loga_logr_DynamicalSystem_FixedInit(
    dt=0.005, T=T, ground_truth_a=10.0, ground_truth_r=28.0, ground_truth_b=8.0 / 3.0,
    init_a=math.exp(3.116), init_r=math.exp(3.7))
step = dynamical_system_truncated_step.DynamicalSystemDecomposableTruncatedStepMultiDevice(
    dynamical_system=task, num_tasks=200, T=T, random_initial_iteration=True,
    truncation_window_size=W, device_list=jax.devices())
est = truncated_pesk.TruncatedPESK(
    truncated_step=step, unroll_length=W, K=K, std=0.04, burn_in_length=0 if SCAN else T,
    loss_normalize=False, jitted=True)

theta = task.meta_init(jax.random.PRNGKey(1))  # init_seed 1; meta_init ignores the key
ww = gradient_learner.WorkerWeights(theta=theta, theta_model_state=None,
                                    outer_state=gradient_learner.OuterState(outer_iteration=0))
key = jax.random.PRNGKey(SEED)
key, k_init = jax.random.split(key)
t0 = time.time()
state = est.init_worker_state(ww, k_init)
if SCAN:
    import jax.numpy as jnp
    data = step.get_batch()

    def _step(carry, _):
        st, kk, loss_sum, g_sum, count = carry
        kk, sub = jax.random.split(kk, 2)  # haiku PRNGSequence.__next__ with reserve size 1
        (st, ls, gs, c), _ = est._pesk_unroll(theta, st, sub, data, ww.outer_state)
        g_sum = jax.tree_util.tree_map(lambda a, b: a + b, g_sum, gs)
        return (st, kk, loss_sum + ls, g_sum, count + c), None

    @jax.jit
    def _burn(st, kk):
        zero = jax.tree_util.tree_map(jnp.zeros_like, theta)
        (st, _, _, _, _), _ = jax.lax.scan(_step, (st, kk, jnp.array(0.0), zero, jnp.array(0)), None, length=T)
        return st

    @jax.jit
    def _estimate(st, kk):
        zero = jax.tree_util.tree_map(jnp.zeros_like, theta)
        (st, _, loss_sum, g_sum, count), _ = jax.lax.scan(
            _step, (st, kk, jnp.array(0.0), zero, jnp.array(0)), None, length=W)
        g = jax.tree_util.tree_map(lambda x: x / count, g_sum)
        return st, g, loss_sum / (2 * count)

    _, _, k3 = jax.random.split(k_init, num=3)  # init_worker_state's burn-in key
    state = _burn(state, k3)
t_burn = time.time() - t0
with open(OUT, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["W", "K", "seed", "estimate", "g_log_a", "g_log_r", "mean_loss"])
    t1 = time.time()
    for i in range(M):
        key, k = jax.random.split(key)
        if SCAN:
            state, g, mean_loss = _estimate(state, k)
        else:
            out, _ = est.compute_gradient_estimate(ww, k, state)
            state, g, mean_loss = out.unroll_state, out.grad, out.mean_loss
        w.writerow([W, K, SEED, i, float(g.log_a), float(g.log_r), float(mean_loss)])
        if i % 50 == 0:
            f.flush()
    t_est = time.time() - t1
print(f"W={W} K={K} seed={SEED} M={M} burn_in_s={t_burn:.1f} estimates_s={t_est:.1f} "
      f"scan={SCAN} jax={jax.__version__}", file=sys.stderr)
