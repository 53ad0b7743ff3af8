"""The character-level PTB LSTM task: objective vs an independent NumPy loop, scenarios."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import systems, tasks
from pes.data import ptb

WORDS = (
    " the quick brown fox jumps over the lazy dog \n pack my box with five dozen liquor jugs \n" * 3
)


@pytest.fixture()
def word_file(tmp_path):
    path = tmp_path / "ptb.train.txt"
    path.write_text(WORDS)
    return path


def make(word_file, **kw):
    kw.setdefault("sequence_length", 40)
    return tasks.make("ptb_lstm", source="word_file", data_path=str(word_file), **kw)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_objective(theta, tokens):
    """Summed next-character cross-entropy, written out from the LSTM equations."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), theta)
    lstm = p["lstm"]
    hidden = lstm["hi"]["kernel"].shape[0]
    c = np.zeros(hidden)
    h = np.zeros(hidden)
    total = 0.0
    for t in range(len(tokens) - 1):
        x = p["embed"]["embedding"][tokens[t]]

        def gate(name, x=x, h=h):
            return (
                x @ lstm["i" + name]["kernel"]
                + h @ lstm["h" + name]["kernel"]
                + lstm["h" + name]["bias"]
            )

        i, f, g, o = sigmoid(gate("i")), sigmoid(gate("f")), np.tanh(gate("g")), sigmoid(gate("o"))
        c = f * c + i * g
        h = o * np.tanh(c)
        logits = h @ p["decoder"]["kernel"] + p["decoder"]["bias"]
        m = logits.max()
        total += m + np.log(np.sum(np.exp(logits - m))) - logits[tokens[t + 1]]
    return total


@pytest.mark.numerics
def test_full_objective_matches_an_independent_loop(word_file):
    task = make(word_file)
    tokens = task.system_data.data
    assert tokens.shape == (41,)
    # Perturb theta away from its init so every parameter (zero biases too) matters.
    leaves, treedef = jax.tree.flatten(task.theta_init)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    theta = jax.tree.unflatten(
        treedef,
        [
            x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
            for k, x in zip(keys, leaves, strict=True)
        ],
    )
    expected = numpy_objective(theta, tokens)
    key = jax.random.PRNGKey(0)
    rebuilt = task.system_data.build  # rebuilds the system from traced tokens

    @jax.jit
    def objectives(theta, tokens):
        return (
            systems.full_objective(task.system, theta, key, key),
            task.evaluate(theta, key)["loss"],
            systems.full_objective(rebuilt(tokens), theta, key, key),
        )

    for got in objectives(theta, jnp.asarray(tokens)):
        np.testing.assert_allclose(float(got), expected, rtol=1e-10)
    # Negative control: a shifted sequence changes the objective.
    assert abs(numpy_objective(theta, tokens[1:]) - expected) > 1e-3


def test_model_shapes_and_initialisation(word_file):
    task = make(word_file)
    vocab = task.metadata["vocab_size"]
    theta = task.theta_init
    assert theta["embed"]["embedding"].shape == (vocab, 5)
    assert theta["decoder"]["kernel"].shape == (5, vocab)
    assert np.all(np.asarray(theta["decoder"]["bias"]) == 0)
    assert np.max(np.abs(np.asarray(theta["embed"]["embedding"]))) <= 0.1
    lstm_params = 4 * 25 + 4 * (25 + 5)
    assert task.metadata["num_params"] == vocab * 5 + lstm_params + 5 * vocab + vocab
    # Deterministic from init_seed.
    again = make(word_file)
    jax.tree.map(np.testing.assert_array_equal, theta, again.theta_init)


def test_scenarios(word_file):
    corpus = ptb.load_corpus("word_file", word_file)
    real = make(word_file, scenario="real").system_data.data
    np.testing.assert_array_equal(real, corpus.ids[:41])
    repeat = make(word_file, scenario="repeat").system_data.data
    np.testing.assert_array_equal(repeat, np.full(41, corpus.ids[0]))
    random = make(word_file, scenario="random").system_data.data
    expected = jax.random.randint(jax.random.PRNGKey(5), (20000,), 0, len(corpus.vocab), jnp.int32)[
        :41
    ]
    np.testing.assert_array_equal(random, expected)
    assert len(set(random.tolist())) > 10


def test_bad_parameters_fail_early(word_file):
    with pytest.raises(
        ValueError, match="scenario='shuffled' is invalid; allowed: real, random, repeat"
    ):
        make(word_file, scenario="shuffled")
    with pytest.raises(ValueError, match="sequence_length=0 is invalid"):
        make(word_file, sequence_length=0)
    with pytest.raises(ValueError, match="needs 100001 tokens"):
        make(word_file, sequence_length=100000)
    with pytest.raises(ValueError, match="source='web' is invalid"):
        tasks.make("ptb_lstm", source="web")
