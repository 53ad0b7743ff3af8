"""UCI yacht: the packaged data, the loader's checks, the split, the task and its computed optimum."""

import time
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import config
from pes import estimators, outer, tasks
from pes.data import images, yacht
from pes.tasks import uci_yacht


@pytest.fixture(scope="module")
def raw_text():
    return yacht.packaged_path().read_text()


def test_packaged_copy_checks_out_and_has_attribution():
    table = yacht.read("package")
    assert table.values.shape == (308, 7) and table.md5 == yacht.MD5
    readme = (yacht.packaged_path().parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Gerritsma" in readme


def test_split_sizes_standardisation_and_permutation(raw_text):
    data = yacht.load()
    assert data.x_train.shape == (246, 6) and data.y_train.shape == (246,)
    assert data.x_val.shape == (62, 6) and data.y_val.shape == (62,)
    # standardised with the statistics of all 308 rows (ddof 0), not of the train part
    both = np.concatenate(
        [np.column_stack([data.x_train, data.y_train]), np.column_stack([data.x_val, data.y_val])]
    )
    np.testing.assert_allclose(both.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(both.std(axis=0), 1.0, rtol=1e-12)
    assert abs(data.x_train.mean(axis=0)).max() > 1e-3  # the train part alone is not centred
    # rows in the order of the paper's permutation: np.random.seed(1); choice(n, n, replace=False)
    rows = np.loadtxt(yacht.packaged_path())
    np.random.seed(1)
    order = np.random.choice(range(308), 308, replace=False)
    z = (rows - rows.mean(0)) / rows.std(0)
    np.testing.assert_allclose(data.x_train, z[order[:246], :6], rtol=1e-12)
    np.testing.assert_allclose(data.y_val, z[order[246:], 6], rtol=1e-12)


def test_local_file_and_line_ending_variants_pass(tmp_path, raw_text):
    crlf = tmp_path / "crlf.data"
    crlf.write_bytes((raw_text.replace("\n", "\r\n") + "\r\n").encode())
    a, b = yacht.load("file", path=crlf), yacht.load()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.origin == f"file:{crlf}"
    # auto with a path uses the path
    assert yacht.read("auto", path=crlf).origin.startswith("file:")


def _bad(tmp_path, text, name="bad.data"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_checksum_failure_names_file_and_fix(tmp_path, raw_text):
    altered = raw_text.replace("0.11", "0.12", 1)
    path = _bad(tmp_path, altered)
    with pytest.raises(yacht.YachtFileError) as err:
        yacht.load("file", path=path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "checksum" in msg and yacht.MD5 in msg
    assert "data_source=package" in msg
    # deliberately altered data is accepted only when asked for
    assert yacht.load("file", path=path, verify_checksum=False).x_train.shape == (246, 6)


def test_truncated_file_is_an_error_not_a_shorter_dataset(tmp_path, raw_text):
    path = _bad(tmp_path, "\n".join(raw_text.splitlines()[:300]))
    with pytest.raises(yacht.YachtFileError, match=r"has 300 rows, expected 308 \(truncated"):
        yacht.load("file", path=path)
    # a line cut in the middle is a column-count error
    path = _bad(tmp_path, raw_text[: len(raw_text) - 6], "cut.data")  # "... 0.450 46.66" -> "... 0.450"
    with pytest.raises(yacht.YachtFileError, match=r"line 308 has 6 columns, expected 7"):
        yacht.load("file", path=path)


def test_wrong_column_count_and_garbage(tmp_path, raw_text):
    lines = raw_text.splitlines()
    lines[4] = " ".join(lines[4].split()[:-1])
    path = _bad(tmp_path, "\n".join(lines))
    with pytest.raises(yacht.YachtFileError) as err:
        yacht.load("file", path=path)
    msg = str(err.value)
    assert f"yacht file file:{path}: line 5 has 6 columns, expected 7" in msg and "\n" not in msg
    lines = raw_text.splitlines()
    lines[0] = lines[0].replace("0.11", "abc")
    with pytest.raises(yacht.YachtFileError, match="line 1 has a non-numeric value"):
        yacht.parse("\n".join(lines), "x")
    with pytest.raises(yacht.YachtFileError, match="not a text file"):
        yacht.parse(b"\x89PNG\x00\xff", "img.png")
    with pytest.raises(yacht.YachtFileError, match="holds no data rows"):
        yacht.parse("\n\n", "empty")


def test_missing_file_and_bad_source_name_the_options(tmp_path):
    with pytest.raises(images.DataUnavailableError, match=r"no file at .*data_source=package"):
        yacht.load("file", path=tmp_path / "nope.data")
    with pytest.raises(ValueError, match="data_source='web' is unknown; allowed: auto, package, file, url"):
        yacht.load("web")
    with pytest.raises(ValueError, match="data_source=file needs data_path"):
        yacht.load("file")


def test_failed_download_fails_within_seconds(monkeypatch):
    def hang(url, timeout=None):  # a network that never answers
        time.sleep(30)

    monkeypatch.setattr(urllib.request, "urlopen", hang)
    start = time.perf_counter()
    with pytest.raises(images.DataUnavailableError) as err:
        yacht.load("url", timeout=0.5)
    assert time.perf_counter() - start < 3.0
    msg = str(err.value)
    assert "no answer within 0.5 s" in msg and "data_source=package" in msg and "data_path=" in msg

    def refuse(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(images.DataUnavailableError, match=r"URLError.*ways to provide it"):
        yacht.load("url")


def test_mocked_download_is_checked_like_a_file(monkeypatch, raw_text):
    class Response:
        def __init__(self, data):
            self.data = data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.data

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response(raw_text.encode()))
    data = yacht.load("url", url="http://example.invalid/yacht")
    assert data.origin == "url:http://example.invalid/yacht" and data.x_val.shape == (62, 6)
    truncated = "\n".join(raw_text.splitlines()[:100]).encode()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response(truncated))
    with pytest.raises(yacht.YachtFileError, match="url:http://example.invalid/yacht has 100 rows"):
        yacht.load("url", url="http://example.invalid/yacht")


# ----------------------------------------------------------------------------- task


def test_computed_optimum_matches_a_direct_numpy_ridge_computation():
    task = tasks.make("uci_yacht")
    data = yacht.load()
    x, y, xv, yv = data.x_train, data.y_train, data.x_val, data.y_val
    thetas = np.linspace(-4, 6, 2001)  # spacing 5e-3
    losses = []
    for th in thetas:
        w = np.linalg.solve(x.T @ x + np.exp(th) * np.eye(6), x.T @ y)
        losses.append(0.5 * np.sum((xv @ w - yv) ** 2))
    direct = thetas[int(np.argmin(losses))]
    assert abs(task.optimum - direct) <= 5e-3
    assert task.metadata["optimum_val_loss"] == pytest.approx(min(losses), rel=1e-6)
    # the closed form is the point the inner SGD converges to at fixed theta
    th = task.optimum
    converge = jax.jit(
        lambda w: jax.lax.fori_loop(0, 30_000, lambda i, w: task.system.step(th, w, None)[0], w)
    )
    w = converge(task.system.init(jax.random.key(0)))  # 30,000 steps of lr 1e-3
    w_ridge = np.linalg.solve(x.T @ x + np.exp(th) * np.eye(6), x.T @ y)
    np.testing.assert_allclose(np.asarray(w), w_ridge, rtol=1e-6, atol=1e-8)
    out = task.evaluate(jnp.asarray(th), jax.random.key(0))
    assert float(out["theta_optimum"]) == pytest.approx(th)
    assert float(task.evaluate(jnp.asarray(th - 0.3), None)["theta_error"]) == pytest.approx(0.3)
    assert float(out["val_loss_converged"]) == pytest.approx(min(losses), rel=1e-6)


def test_inner_step_by_hand():
    task = tasks.make("uci_yacht", inner_lr=1e-3)
    data = yacht.load()
    w0 = np.asarray(task.system.init(jax.random.key(3)))
    theta = 0.7
    w1, loss = task.system.step(jnp.asarray(theta), jnp.asarray(w0), None)
    g = data.x_train.T @ (data.x_train @ w0 - data.y_train) + np.exp(theta) * w0
    w_hand = w0 - 1e-3 * g
    np.testing.assert_allclose(np.asarray(w1), w_hand, rtol=1e-12)
    assert float(loss) == pytest.approx(0.5 * np.sum((data.x_val @ w_hand - data.y_val) ** 2), rel=1e-12)
    assert task.system.horizon is None and float(task.theta_init) == -1.0


def test_pes_moves_theta_towards_the_optimum_and_truncated_es_away():
    """A short, cheap version of the figure's runs (K=1, N=4, sigma 0.01, Adam 3e-3)."""
    import optax

    task = tasks.make("uci_yacht", theta_init=5.0)
    opt = optax.adam(3e-3)
    ends = {}
    for name in ("pes", "es"):
        est = estimators.make(name, task.system, trunc_len=1, sigma=0.01, num_particles=4)
        state, _ = outer.run(jax.random.key(3), task.theta_init, est, opt, num_steps=3000, log_every=3000)
        ends[name] = float(state.theta)
    # from theta=5, 3000 Adam steps of 3e-3 can move theta by at most ~9; both move down,
    # and the one-step-greedy truncated ES ends lower (towards no regularisation)
    assert ends["es"] < ends["pes"] < 5.0


def test_bad_inputs_are_one_line_errors(tmp_path):
    raw = yacht.packaged_path().read_text().splitlines()
    raw[10] = raw[10] + " 1.0"
    bad = tmp_path / "yacht.data"
    bad.write_text("\n".join(raw))
    with pytest.raises(yacht.YachtFileError, match="line 11 has 8 columns, expected 7"):
        tasks.make("uci_yacht", data_path=str(bad))
    with pytest.raises(ValueError, match=r"inner_lr=0.5 is invalid; allowed: a step below 2 /"):
        tasks.make("uci_yacht", inner_lr=0.5)
    with pytest.raises(ValueError, match="theta_init=nan is invalid"):
        tasks.make("uci_yacht", theta_init=float("nan"))
    # through the config layer: a ConfigError before any compute
    cfg = config.compose(["task=uci_yacht", f"task.data_path={bad}", "estimator=pes"])
    with pytest.raises(config.ConfigError, match=r"line 11 has 8 columns"):
        config.build(cfg)


def test_optimum_on_the_grid_edge_is_refused():
    ridge = uci_yacht.Ridge.from_data(*[np.asarray(a) for a in yacht.load()[:4]])
    with pytest.raises(ValueError, match="no interior optimum"):
        uci_yacht.optimum(ridge, grid=(3.0, 6.0, 31))
