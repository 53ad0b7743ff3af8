"""Mutation check of the test suite: known ES/PES/NRES bugs must each make a fast test fail.

    python -m tests.mutations [--all] [--only NAME ...] [--list] [--out table.md]
    make mutate

Each mutation is a small source edit (exact text replaced; the check stops with an error
if the text is no longer in the library, so the catalogue follows the code).  The
repository's files are copied to a temporary directory, the edit is applied to the copy
(the working tree is never touched), and the mutation's relevant fast tests run against
the copy (``PYTHONPATH`` puts the copy first).  First the same selection runs on the
unmutated copy, which must pass.  A mutation is *caught* when at least one test fails;
the table lists the failing tests.  By default a mutation's run stops after
``--maxfail`` (3) failures, so a caught mutation costs a few tests and the table names
the first catchers; ``--all`` runs every selected test and names all of them.  Exit code
1 if any mutation survives (or the baseline fails).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVO = "pes/estimators/evolution.py"
COMMON = "pes/estimators/_common.py"
SYSTEMS = "pes/systems.py"

# Test selections (pytest arguments), cheapest and most sensitive first.
REF = "tests/test_reference.py"
KEYED = "tests/test_unbiasedness.py::test_unbiased_with_the_exact_variance_on_a_key_dependent_system"
EQUIV = "tests/test_equivalences.py"


def ref(name: str) -> list[str]:
    return [f"{REF}::test_{name}_matches_the_reference"]


def keyed(*cases: str) -> list[str]:
    return [f"{KEYED}[{c}]" for c in cases]


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (old, new): ``old`` must occur exactly once
    tests: tuple[str, ...]


M = Mutation
CATALOGUE: tuple[Mutation, ...] = (
    # --- the seven rows of the issue-16 audit -----------------------------------------------
    M(
        "pes-pair-shares-state",
        "PES: the + and - members of a pair continue from one inner state (the + member's)",
        EVO,
        (
            (
                "return grad, shard.groups(PESState(out.inner, out.t, accum)), aux",
                "return grad, shard.groups(PESState(jax.tree.map(lambda x: jnp.broadcast_to("
                "x[:, :1], x.shape), out.inner), out.t, accum)), aux",
            ),
        ),
        (*ref("pes"), *keyed("pes-T8-K2"), EQUIV),
    ),
    M(
        "pes-accumulator-never-reset",
        "PES: the accumulator is never reset at an episode end (keeps adding every eps)",
        EVO,
        (
            (
                "return grad, C.group_where(last_end, jax.tree.map(jnp.zeros_like, eps), cont)",
                "return grad, jax.tree.map(jnp.add, accum, eps)",
            ),
        ),
        (*keyed("pes-T8-K2", "pes-T5-K4"), *ref("pes"), EQUIV),
    ),
    M(
        "pes-old-accumulator-only",
        "PES: the estimate weights losses by the old accumulator only (this truncation's eps left out)",
        EVO,
        (
            (
                "grad = C.combine2(total, eps, before, accum, scale, like)",
                "grad = C.combine2(total, jax.tree.map(jnp.zeros_like, eps), before, accum, scale, like)",
            ),
        ),
        (*ref("pes"), *keyed("pes-T8-K2"), EQUIV),
    ),
    M(
        "pes-scale-1/(N sigma)",
        "PES: the estimate is scaled by 1/(N sigma) instead of 1/(N sigma^2)",
        EVO,
        (
            (
                'num_chunks, shard = _particle_plan("pes", lay, particle_chunk_size, devices)\n'
                "    scale = 1.0 / (num_particles * sigma**2)",
                'num_chunks, shard = _particle_plan("pes", lay, particle_chunk_size, devices)\n'
                "    scale = 1.0 / (num_particles * sigma)",
            ),
        ),
        (*ref("pes"), *keyed("pes-T8-K2"), EQUIV),
    ),
    M(
        "no-common-random-numbers",
        "ES/PES/NRES unroll: every particle draws its own data keys (no common random numbers)",
        EVO,
        (
            (
                "state, loss = step(thetas, state, key_pair[0])",
                "state, loss = jax.vmap(system.step)(thetas, state, jax.random.split(key_pair[0], num))",
            ),
            (
                "state, loss = step(th, state, key_pair[0])",
                "state, loss = jax.vmap(system.step)(th, state, jax.random.split(key_pair[0], num))",
            ),
        ),
        (*keyed("pes-T8-K2", "nres-T8-K2"), *ref("pes"), *ref("es")),
    ),
    M(
        "pes-post-reset-old-accumulator",
        "PES: losses after a reset inside a truncation are weighted by the old accumulator + eps",
        EVO,
        (
            (
                "grad = C.combine2(total, eps, before, accum, scale, like)",
                "grad = C.combine2(total, eps, total, accum, scale, like)",
            ),
        ),
        (*keyed("pes-T5-K4"), *ref("pes"), EQUIV),
    ),
    M(
        "pes-stagger-burn-in-not-accumulated",
        "PES stagger: the burn-in's perturbation is not put into the accumulator",
        EVO,
        (
            (
                "accum = C.group_where(started, eps, jax.tree.map(jnp.zeros_like, eps))",
                "accum = jax.tree.map(jnp.zeros_like, eps)",
            ),
        ),
        (*keyed("pes-T7-K3-stagger"), *ref("pes")),
    ),
    # --- further bugs ------------------------------------------------------------------------
    M(
        "noise-sigma-squared",
        "noise: eps = sigma^2 z instead of sigma z (wrong sigma scaling of the perturbations)",
        COMMON,
        (("sigma * jax.random.normal(k,", "sigma**2 * jax.random.normal(k,"),),
        (*keyed("pes-T8-K2", "es-T5-K5-full"), *ref("pes"), *ref("es")),
    ),
    M(
        "es-scale-1/(N sigma)",
        "truncated ES: the estimate is scaled by 1/(N sigma) instead of 1/(N sigma^2)",
        EVO,
        (
            (
                'num_chunks, shard = _particle_plan("es", lay, particle_chunk_size, devices)\n'
                "    scale = 1.0 / (num_particles * sigma**2)",
                'num_chunks, shard = _particle_plan("es", lay, particle_chunk_size, devices)\n'
                "    scale = 1.0 / (num_particles * sigma)",
            ),
        ),
        (*keyed("es-T5-K5-full"), *ref("es"), EQUIV),
    ),
    M(
        "swapped-antithetic-signs",
        "antithetic pairs: members perturbed by (-eps, +eps) while differenced as (+, -)",
        COMMON,
        (
            (
                "return jnp.array([1.0, -1.0][: self.group_size], dtype)",
                "return jnp.array([-1.0, 1.0][: self.group_size], dtype)",
            ),
        ),
        (*keyed("pes-T8-K2"), *ref("pes"), *ref("es")),
    ),
    M(
        "reset-one-step-late",
        "unroll: an episode that ends inside a truncation resets one step late",
        EVO,
        (("end = tt >= horizon\n", "end = tt >= horizon + 1\n"),),
        (
            *ref("pes"),
            *keyed("pes-T5-K4"),
            "tests/test_particle_scaling.py::test_unroll_particles_matches_systems_unroll",
        ),
    ),
    M(
        "reset-with-the-step-key",
        "unroll: a reset inside a truncation re-initialises with the step key, not the reset key",
        EVO,
        (("state = maybe_reset(state, end, key_pair[1])", "state = maybe_reset(state, end, key_pair[0])"),),
        (*keyed("pes-T5-K4", "nres-T5-K4"), *ref("pes")),
    ),
    M(
        "chunks-merged-in-the-wrong-order",
        "particle chunks: results of chunk c are put back as groups cG/C.. instead of c, c + C, ..",
        EVO,
        (
            (
                "return jnp.swapaxes(x, 0, 1).reshape((groups,) + x.shape[2:])",
                "return x.reshape((groups,) + x.shape[2:])",
            ),
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
        EVO,
        (
            (
                "cont = C.group_where(any_end, eps, jax.tree.map(jnp.add, accum, eps))",
                "cont = C.group_where(any_end, jax.tree.map(jnp.zeros_like, eps), "
                "jax.tree.map(jnp.add, accum, eps))",
            ),
        ),
        (*keyed("pes-T5-K4"), *ref("pes")),
    ),
    M(
        "nres-never-redraws",
        "NRES: a new episode keeps the old perturbation (the fresh draw is never stored)",
        EVO,
        (("eps = C.group_where(out.any_end, fresh, state.eps)", "eps = state.eps"),),
        (*keyed("nres-T8-K2", "nres-T5-K4"), *ref("nres")),
    ),
    M(
        "es-mean-state-not-advanced",
        "truncated ES: the shared unperturbed state is not advanced between truncations",
        EVO,
        (
            (
                "state.t, data_key, trunc_len)\n            new_state = ESState(inner, t)",
                "state.t, data_key, trunc_len)\n            new_state = ESState(state.inner, t)",
            ),
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
        (
            (
                "return jnp.zeros((num_steps,), dtype).at[-1].set(1.0)",
                "return jnp.zeros((num_steps,), dtype).at[0].set(1.0)",
            ),
        ),
        (
            f"{REF}::test_pes_matches_the_reference[T6-K3-last]",
            f"{REF}::test_es_matches_the_reference[T6-K3-last]",
        ),
    ),
    M(
        "single-particles-negated",
        "antithetic=False: each particle's objective enters the estimate with the wrong sign",
        EVO,
        (
            (
                "return x[:, 0] - x[:, 1] if lay.group_size == 2 else x[:, 0]",
                "return x[:, 0] - x[:, 1] if lay.group_size == 2 else -x[:, 0]",
            ),
        ),
        (*keyed("pes-T6-K3-single"), f"{REF}::test_pes_matches_the_reference[T5-K2-single]"),
    ),
    M(
        "gpes-blocks-one-truncation-too-long",
        "GPES: a noise block is replaced after m + 1 truncations instead of m",
        EVO,
        (("refresh = state.age >= blocks", "refresh = state.age > blocks"),),
        (
            *ref("gpes"),
            *keyed("gpes-T8-K2-blocks2"),
            "tests/test_gpes.py::test_blocks_are_noise_every_steps_in_lockstep",
        ),
    ),
    M(
        "stagger-offsets-skip-the-last-phase",
        "stagger: offsets drawn from 0..T-2 instead of 0..T-1",
        EVO,
        (
            (
                "offsets = jax.random.randint(offset_key, (lay.num_groups,), 0, horizon, jnp.int32)",
                "offsets = jax.random.randint(offset_key, (lay.num_groups,), 0, horizon - 1, jnp.int32)",
            ),
        ),
        (*ref("pes"), *ref("nres")),
    ),
)


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


def apply(copy: Path, mutation: Mutation) -> str:
    """Edit the copy; return the original text of the edited file (to restore it)."""
    path = copy / mutation.path
    original = path.read_text()
    text = original
    for old, new in mutation.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(
                f"mutation {mutation.name!r}: the text to replace occurs {count} times in {mutation.path} "
                f"(expected once); the library changed: update tests/mutations.py\n  text: {old!r}"
            )
        text = text.replace(old, new)
    path.write_text(text)
    return original


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
