"""Mutation check of the test suite: known ES/PES/NRES bugs must each make a fast test fail.

    python -m tests.mutations [--all] [--only NAME ...] [--list] [--out table.md]
    make mutate

Each mutation changes behaviour, not text, so that the catalogue survives refactors:

* `Wrap`: a named function (module-level, or a method ``Class.name``) is replaced by
  ``wrapper(original)``; the wrapper's source is appended to the module, so every caller,
  inside the module or importing it by name, gets the buggy version;
* `Edit`: a small syntax-tree edit inside a named function: an expression, compared as a
  syntax tree (formatting and comments do not matter), must occur exactly once in that
  function (nested functions included) and is replaced by another.

The check stops with an error when a target function or expression is no longer in the
library, so the catalogue follows the code.  The repository's files are copied to a
temporary directory, the mutation is applied to the copy (the working tree is never
touched), and the mutation's relevant fast tests run against the copy (``PYTHONPATH`` puts
the copy first).  First the same selection runs on the unmutated copy, which must pass.  A
mutation is *caught* when at least one test fails; the table lists the failing tests.  By
default a mutation's run stops after ``--maxfail`` (3) failures, so a caught mutation costs a
few tests and the table names the first catchers; ``--all`` runs every selected test and
names all of them.  Exit code 1 if any mutation survives (or the baseline fails).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTICLES = "pes/estimators/particles.py"
PERSISTENT = "pes/estimators/persistent.py"
TRUNCATED = "pes/estimators/truncated.py"
NOISE_REUSE = "pes/estimators/noise_reuse.py"
COMMON = "pes/estimators/_common.py"
SYSTEMS = "pes/systems.py"
OUTER = "pes/outer.py"

# Test selections (pytest arguments), cheapest and most sensitive first.
REF = "tests/test_reference.py"
KEYED = "tests/test_unbiasedness.py::test_unbiased_with_the_exact_variance_on_a_key_dependent_system"
EQUIV = "tests/test_equivalences.py"
HORIZONS = "tests/test_horizons.py"


def ref(name: str) -> list[str]:
    return [f"{REF}::test_{name}_matches_the_reference"]


def keyed(*cases: str) -> list[str]:
    return [f"{KEYED}[{c}]" for c in cases]


@dataclasses.dataclass(frozen=True)
class Wrap:
    """``function = wrapper(function)``: ``source`` defines ``wrapper(original)``."""

    source: str


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace the expression ``old`` (exactly once in the target function) by ``new``."""

    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str  # the module
    target: str  # the function: "name", "Class.method" or "outer.inner"
    change: Wrap | Edit
    tests: tuple[str, ...]


def factory_grad_times_sigma(name: str) -> Wrap:
    """The estimator ``name``'s gradient multiplied by sigma (a 1/(N sigma) scale)."""
    return Wrap(
        f"""
        def wrapper(original):
            @functools.wraps(original)
            def {name}(system, **hp):
                est = original(system, **hp)

                def estimate(key, theta, state):
                    grad, state, aux = est.estimate(key, theta, state)
                    return jax.tree.map(lambda g: g * hp["sigma"], grad), state, aux

                return est._replace(estimate=estimate)

            return {name}
        """
    )


M = Mutation
CATALOGUE: tuple[Mutation, ...] = (
    # --- seven bugs of an audit of an earlier version of the suite --------------------------
    M(
        "pes-pair-shares-state",
        "PES: the + and - members of a pair continue from one inner state (the + member's)",
        PERSISTENT,
        "pes",
        Edit(
            "PESState(out.inner, out.t, accum)",
            "PESState(jax.tree.map(lambda x: jnp.broadcast_to(x[:, :1], x.shape), out.inner), out.t, accum)",
        ),
        (*ref("pes"), *keyed("pes-T8-K2"), EQUIV),
    ),
    M(
        "pes-accumulator-never-reset",
        "PES: the accumulator is never reset at an episode end (keeps adding every eps)",
        PERSISTENT,
        "pes_update",
        Wrap(
            """
            def wrapper(original):
                def pes_update(out, eps, accum, scale, like):
                    grad, _ = original(out, eps, accum, scale, like)
                    return grad, jax.tree.map(jnp.add, accum, eps)

                return pes_update
            """
        ),
        (*keyed("pes-T8-K2", "pes-T5-K4"), *ref("pes"), EQUIV),
    ),
    M(
        "pes-old-accumulator-only",
        "PES: the estimate weights losses by the old accumulator only (this truncation's eps left out)",
        PERSISTENT,
        "pes_update",
        Wrap(
            """
            def wrapper(original):
                def pes_update(out, eps, accum, scale, like):
                    grad, _ = original(out, jax.tree.map(jnp.zeros_like, eps), accum, scale, like)
                    return grad, original(out, eps, accum, scale, like)[1]

                return pes_update
            """
        ),
        (*ref("pes"), *keyed("pes-T8-K2"), EQUIV),
    ),
    M(
        "pes-scale-1/(N sigma)",
        "PES: the estimate is scaled by 1/(N sigma) instead of 1/(N sigma^2)",
        PERSISTENT,
        "pes",
        factory_grad_times_sigma("pes"),
        (*ref("pes"), *keyed("pes-T8-K2"), EQUIV),
    ),
    M(
        "no-common-random-numbers",
        "ES/PES/NRES unroll: every particle draws its own data keys (no common random numbers)",
        PARTICLES,
        "particle_step",
        Wrap(
            """
            def wrapper(original):
                def particle_step(system):
                    def step(thetas, state, key):
                        num = jax.tree.leaves(state)[0].shape[0]
                        return jax.vmap(system.step)(thetas, state, jax.random.split(key, num))

                    return step

                return particle_step
            """
        ),
        (*keyed("pes-T8-K2", "nres-T8-K2"), *ref("pes"), *ref("es")),
    ),
    M(
        "pes-post-reset-old-accumulator",
        "PES: losses after a reset inside a truncation are weighted by the old accumulator + eps",
        PERSISTENT,
        "pes_update",
        Wrap(
            """
            def wrapper(original):
                def pes_update(out, eps, accum, scale, like):
                    return original(out._replace(before=out.total), eps, accum, scale, like)

                return pes_update
            """
        ),
        (*keyed("pes-T5-K4"), *ref("pes"), EQUIV),
    ),
    M(
        "pes-stagger-burn-in-not-accumulated",
        "PES stagger: the burn-in's perturbation is not put into the accumulator",
        PERSISTENT,
        "burn_in_accumulator",
        Wrap(
            """
            def wrapper(original):
                def burn_in_accumulator(s, state, eps):
                    return state._replace(accum=jax.tree.map(jnp.zeros_like, eps))

                return burn_in_accumulator
            """
        ),
        (*keyed("pes-T7-K3-stagger"), *ref("pes")),
    ),
    # --- further bugs ------------------------------------------------------------------------
    M(
        "noise-sigma-squared",
        "noise: eps = sigma^2 z instead of sigma z (wrong sigma scaling of the perturbations)",
        COMMON,
        "sample_noise",
        Wrap(
            """
            def wrapper(original):
                def sample_noise(key, theta, num_groups, sigma):
                    return original(key, theta, num_groups, sigma**2)

                return sample_noise
            """
        ),
        (*keyed("pes-T8-K2", "es-T5-K5-full"), *ref("pes"), *ref("es")),
    ),
    M(
        "es-scale-1/(N sigma)",
        "truncated ES: the estimate is scaled by 1/(N sigma) instead of 1/(N sigma^2)",
        TRUNCATED,
        "es",
        factory_grad_times_sigma("es"),
        (*keyed("es-T5-K5-full"), *ref("es"), EQUIV),
    ),
    M(
        "particle-scale-1/(N sigma)",
        "every ES-family estimator: the shared scale is 1/(N sigma) instead of 1/(N sigma^2)",
        PARTICLES,
        "setup",
        Edit("1.0 / (opts.num_particles * opts.sigma**2)", "1.0 / (opts.num_particles * opts.sigma)"),
        (*ref("pes"), *keyed("es-T5-K5-full"), EQUIV),
    ),
    M(
        "swapped-antithetic-signs",
        "antithetic pairs: members perturbed by (-eps, +eps) while differenced as (+, -)",
        COMMON,
        "ParticleLayout.signs",
        Edit("[1.0, -1.0]", "[-1.0, 1.0]"),
        (*keyed("pes-T8-K2"), *ref("pes"), *ref("es")),
    ),
    M(
        "reset-one-step-late",
        "unroll: an episode that ends inside a truncation resets one step late",
        PARTICLES,
        "FixedClock.tick",
        Edit("t >= self.horizon", "t >= self.horizon + 1"),
        (
            *ref("pes"),
            *keyed("pes-T5-K4"),
            "tests/test_particle_scaling.py::test_unroll_particles_matches_systems_unroll",
        ),
    ),
    M(
        "reset-with-the-step-key",
        "unroll: a reset inside a truncation re-initialises with the step key, not the reset key",
        PARTICLES,
        "step_or_reset",
        Edit("reset(state, end, key_pair[1])", "reset(state, end, key_pair[0])"),
        (*keyed("pes-T5-K4", "nres-T5-K4"), *ref("pes")),
    ),
    M(
        "chunks-merged-in-the-wrong-order",
        "particle chunks: results of chunk c are put back as groups cG/C.. instead of c, c + C, ..",
        PARTICLES,
        "chunked",
        Edit(
            "jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])",
            "x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])",
        ),
        (
            *ref("pes"),
            "tests/test_particle_scaling.py::test_chunked_estimate_is_identical_linear_quadratic",
            "tests/test_nres.py::test_nres_options_and_errors",
        ),
    ),
    M(
        "pes-mid-reset-accumulator-restarts-at-zero",
        "PES: after a reset inside a truncation the accumulator restarts at 0, not at this eps",
        PERSISTENT,
        "pes_update",
        Wrap(
            """
            def wrapper(original):
                def pes_update(out, eps, accum, scale, like):
                    grad, new = original(out, eps, accum, scale, like)
                    return grad, _common.group_where(out.any_end, jax.tree.map(jnp.zeros_like, new), new)

                return pes_update
            """
        ),
        (*keyed("pes-T5-K4"), *ref("pes")),
    ),
    M(
        "nres-never-redraws",
        "NRES: a new episode keeps the old perturbation (the fresh draw is never stored)",
        NOISE_REUSE,
        "episode_update",
        Wrap(
            """
            def wrapper(original):
                def episode_update(out, eps, fresh, scale, like):
                    return original(out, eps, fresh, scale, like)[0], eps

                return episode_update
            """
        ),
        (*keyed("nres-T8-K2", "nres-T5-K4"), *ref("nres")),
    ),
    M(
        "es-mean-state-not-advanced",
        "truncated ES: the unperturbed state is not advanced between truncations",
        TRUNCATED,
        "_mean_advance",
        Wrap(
            """
            def wrapper(original):
                def _mean_advance(s, skip_mean):
                    advance = original(s, skip_mean)
                    return lambda theta, state, key: advance(theta, state, key)._replace(inner=state.inner)

                return _mean_advance
            """
        ),
        (
            *ref("es"),
            "tests/test_unbiasedness.py::test_truncated_es_is_unbiased_only_for_the_truncated_gradient",
        ),
    ),
    M(
        "last-loss-weights-the-first-step",
        "unroll_loss='last': the truncation's objective takes its first step's loss",
        SYSTEMS,
        "step_weights",
        Edit(
            "jnp.zeros((num_steps,), dtype).at[-1].set(1.0)",
            "jnp.zeros((num_steps,), dtype).at[0].set(1.0)",
        ),
        (
            f"{REF}::test_pes_matches_the_reference[T6-K3-last]",
            f"{REF}::test_es_matches_the_reference[T6-K3-last]",
        ),
    ),
    M(
        "single-particles-negated",
        "antithetic=False: each particle's objective enters the estimate with the wrong sign",
        PARTICLES,
        "differences",
        Wrap(
            """
            def wrapper(original):
                def differences(x, lay):
                    return original(x, lay) if lay.group_size == 2 else -original(x, lay)

                return differences
            """
        ),
        (*keyed("pes-T6-K3-single"), f"{REF}::test_pes_matches_the_reference[T5-K2-single]"),
    ),
    M(
        "gpes-blocks-one-truncation-too-long",
        "GPES: a noise block is replaced after m + 1 truncations instead of m",
        NOISE_REUSE,
        "block_start",
        Edit("state.age >= blocks", "state.age > blocks"),
        (
            *ref("gpes"),
            *keyed("gpes-T8-K2-blocks2"),
            "tests/test_gpes.py::test_blocks_are_noise_every_steps_in_lockstep",
        ),
    ),
    M(
        "stagger-offsets-skip-the-last-phase",
        "stagger: offsets drawn from 0..T-2 instead of 0..T-1",
        PARTICLES,
        "FixedClock.random_phase",
        Edit(
            "jax.random.randint(offset_key, jnp.shape(t), 0, self.horizon, jnp.int32)",
            "jax.random.randint(offset_key, jnp.shape(t), 0, self.horizon - 1, jnp.int32)",
        ),
        (*ref("pes"), *ref("nres")),
    ),
    # --- random horizons and non-finite estimates --------------------------------------------
    M(
        "drawn-horizons-shared-by-groups",
        "random horizons: every group draws group 0's lengths (step-unlocked groups lock together)",
        PARTICLES,
        "DrawnClock.draw",
        Wrap(
            """
            def wrapper(original):
                def draw(self, key, group):
                    return original(self, key, jnp.zeros_like(group))

                return draw
            """
        ),
        (f"{HORIZONS}::test_groups_draw_their_own_horizons_and_stay_step_unlocked",),
    ),
    M(
        "drawn-horizon-not-redrawn",
        "random horizons: an episode that ends keeps the previous episode's length",
        PARTICLES,
        "DrawnClock._advance",
        Edit("jnp.where(end, self.draw(reset_key, t.group), t.length)", "t.length"),
        (
            f"{HORIZONS}::test_groups_draw_their_own_horizons_and_stay_step_unlocked",
            f"{HORIZONS}::test_unbiased_for_the_expected_objective",
        ),
    ),
    M(
        "nonfinite-estimate-applied",
        "outer loop: a non-finite estimate is applied although train.nonfinite says skip",
        OUTER,
        "guard_nonfinite",
        Wrap(
            """
            def wrapper(original):
                def guard_nonfinite(mode, grad, apply, old):
                    return apply(grad), jnp.zeros((), jnp.int32)

                return guard_nonfinite
            """
        ),
        ("tests/test_outer_nonfinite.py",),
    ),
)


# ----------------------------------------------------------------------------- applying a mutation


def _target(tree: ast.Module, mutation: Mutation) -> ast.FunctionDef:
    """The function ``mutation.target`` in ``tree`` (a dotted path through classes and functions)."""
    scope: ast.AST = tree
    for part in mutation.target.split("."):
        found = [
            node
            for node in ast.walk(scope)
            if node is not scope and isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == part
        ]
        direct = [n for n in found if n in getattr(scope, "body", [])] or found
        if len(direct) != 1:
            raise SystemExit(
                f"mutation {mutation.name!r}: {len(direct)} definitions of {part!r} (target "
                f"{mutation.target!r}) in {mutation.path}; expected one: the library changed, "
                "update tests/mutations.py"
            )
        scope = direct[0]
    if not isinstance(scope, ast.FunctionDef):
        raise SystemExit(f"mutation {mutation.name!r}: {mutation.target!r} is not a function")
    return scope


def _shape(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=False)


def mutate_text(text: str, mutation: Mutation) -> str:
    """The module source ``text`` with ``mutation`` applied (SystemExit if it does not apply)."""
    tree = ast.parse(text)
    function = _target(tree, mutation)
    change = mutation.change
    if isinstance(change, Wrap):
        *owner, name = mutation.target.split(".")
        is_class = [isinstance(n, ast.ClassDef) and n.name == owner[0] for n in tree.body] if owner else []
        if len(owner) > 1 or (owner and not any(is_class)):
            raise SystemExit(f"mutation {mutation.name!r}: Wrap needs a module-level function or a method")
        wrapper = textwrap.dedent(change.source).strip()
        # a method is wrapped as the plain function in its class's namespace
        slot = ".".join([*owner, name])
        original = f"{owner[0]}.__dict__[{name!r}]" if owner else name
        return f"{text}\n\nimport functools  # noqa: E402\n\n{wrapper}\n\n\n{slot} = wrapper({original})\n"
    old = ast.parse(change.old, mode="eval").body
    new = ast.parse(change.new, mode="eval").body
    matches = [node for node in ast.walk(function) if _shape(node) == _shape(old)]
    if len(matches) != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: the expression {change.old!r} occurs {len(matches)} times "
            f"in {mutation.target} ({mutation.path}); expected once: the library changed, update "
            "tests/mutations.py"
        )

    class Replace(ast.NodeTransformer):
        def generic_visit(self, node):
            return new if node is matches[0] else super().generic_visit(node)

    return ast.unparse(ast.fix_missing_locations(Replace().visit(tree)))


def apply(copy: Path, mutation: Mutation) -> str:
    """Mutate the copy; return the original text of the edited file (to restore it)."""
    path = copy / mutation.path
    original = path.read_text()
    path.write_text(mutate_text(original, mutation))
    return original


# ----------------------------------------------------------------------------- machinery


def copy_repository(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the repository (no .venv, no results)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if not src.is_file() or rel.startswith((".venv", "results/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def check_imports_the_copy(copy: Path) -> None:
    """The tests must import the copy's `pes`, not an installed one."""
    env = dict(os.environ, PYTHONPATH=str(copy))
    out = subprocess.run(
        [sys.executable, "-c", "import pes; print(pes.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    where = Path(out.stdout.strip() or "?").resolve()
    if copy.resolve() not in where.parents:
        raise SystemExit(
            f"the copy's tests would import pes from {where}, not from {copy}: {out.stderr[-500:]}"
        )


def run_tests(copy: Path, tests, maxfail: int | None) -> tuple[int, list[str], float]:
    """(pytest exit code, failing test ids, seconds) of ``tests`` run in ``copy``."""
    env = dict(os.environ, PYTHONPATH=str(copy), JAX_PLATFORMS="cpu")
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        "-rf",
        "--tb=no",
    ]
    if maxfail:
        args.append(f"--maxfail={maxfail}")
    start = time.time()
    proc = subprocess.run([*args, *tests], cwd=copy, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
    failed += re.findall(r"^ERROR (\S+)", proc.stdout, flags=re.M)
    if proc.returncode not in (0, 1):  # 2: interrupted, 3: internal error, 4: usage, 5: nothing ran
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"pytest exited with {proc.returncode} on {tests}:\n{tail}")
    return proc.returncode, failed, time.time() - start


def short(test_id: str) -> str:
    return test_id.replace("tests/", "").replace("::test_", "::")


def table(rows, maxfail: int | None) -> str:
    """Markdown table; "yes (3+)" when the run stopped at ``maxfail`` failures."""
    lines = ["| mutation | caught? | catching tests |", "| --- | --- | --- |"]
    for m, failed, _ in rows:
        more = "+" if maxfail and len(failed) >= maxfail else ""
        caught = f"yes ({len(failed)}{more})" if failed else "**NO**"
        names = ", ".join(short(f) for f in failed) if failed else "survives every selected test"
        lines.append(f"| {m.name}: {m.description} | {caught} | {names} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="run every selected test per mutation")
    parser.add_argument(
        "--maxfail", type=int, default=3, help="stop a mutation's run after this many failures"
    )
    parser.add_argument("--only", nargs="*", default=None, help="mutation names to run")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    catalogue = [m for m in CATALOGUE if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in CATALOGUE}
    if unknown:
        raise SystemExit(f"unknown mutation(s) {sorted(unknown)}; allowed: {[m.name for m in CATALOGUE]}")
    if args.list:
        for m in catalogue:
            print(f"{m.name}: {m.description}\n    {m.path}; tests: {' '.join(m.tests)}")
        return 0
    maxfail = None if args.all else args.maxfail
    with tempfile.TemporaryDirectory(prefix="pes-mutations-") as tmp:
        copy = Path(tmp)
        copy_repository(copy)
        check_imports_the_copy(copy)
        for m in catalogue:  # every edit applies (fail early, before any test runs)
            (copy / m.path).write_text(apply(copy, m))
        if not args.no_baseline:
            union = list(dict.fromkeys(t for m in catalogue for t in m.tests))
            code, failed, seconds = run_tests(copy, union, None)
            print(
                f"baseline (no mutation): {len(union)} selections, {seconds:.0f} s, "
                f"failures: {failed or 'none'}"
            )
            if code != 0:
                print("the unmutated copy fails its tests: mutation results would mean nothing")
                return 1
        rows = []
        for m in catalogue:
            original = apply(copy, m)
            try:
                code, failed, seconds = run_tests(copy, list(m.tests), maxfail)
            finally:
                (copy / m.path).write_text(original)
            rows.append((m, failed, seconds))
            status = f"caught by {len(failed)}" if failed else "SURVIVED"
            print(f"{m.name}: {status} ({seconds:.0f} s)", flush=True)
    text = table(rows, maxfail)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    survivors = [m.name for m, failed, _ in rows if not failed]
    if survivors:
        print(f"surviving mutations: {', '.join(survivors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
