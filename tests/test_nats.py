"""NATS-Bench topology files through nats_bench: a mocked API (always), a small archive in the real format (when
nats_bench is installed), and the errors for missing files or package."""
from __future__ import annotations

import sys
import types

import pytest

from gradnas.benchmarks.nats import BASE_NAME, NATSBench, format_nats
from gradnas.cli import main
from gradnas.errors import GradnasError

IS_DARTS = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ARCHS = [ALL_SKIP, IS_DARTS]
# IS-DARTS's published NB201 numbers (docs/methods.md §9) as the 200-epoch entries of the fake benchmark; the
# cifar10-valid run's ori-test accuracy (90.0) must not be reported as CIFAR-10 test accuracy.
ACC = {("cifar10-valid", "valid-accuracy"): 91.55, ("cifar10-valid", "test-accuracy"): 90.0,
       ("cifar10", "test-accuracy"): 94.36, ("cifar100", "valid-accuracy"): 73.49,
       ("cifar100", "test-accuracy"): 73.51, ("ImageNet16-120", "valid-accuracy"): 46.37,
       ("ImageNet16-120", "test-accuracy"): 46.34}


class FakeAPI:
    """The calls of nats_bench's topology API that gradnas makes, recording what was loaded."""

    def __init__(self, path: str, fast_mode: bool):
        self.path, self.fast_mode, self.loaded = path, fast_mode, set()

    def query_index_by_arch(self, arch: str) -> int:
        return ARCHS.index(arch) if arch in ARCHS else -1

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        assert is_random is False  # the mean over seeds, not one random trial
        self.loaded.add(index)
        shift = 0.0 if hp == "200" else -10.0
        return {key: acc + shift for (name, key), acc in ACC.items() if name == dataset}

    def get_cost_info(self, index, dataset, hp="12"):
        self.loaded.add(index)
        return {"flops": 184.7, "params": 1.29 if dataset != "cifar100" else 1.31, "latency": 0.0185}


@pytest.fixture
def fake_nats(monkeypatch):
    created = []
    module = types.ModuleType("nats_bench")

    def create(path, space, fast_mode=False, verbose=True):
        assert space == "tss"
        created.append(FakeAPI(path, fast_mode))
        return created[-1]

    module.create = create
    monkeypatch.setitem(sys.modules, "nats_bench", module)
    return created


@pytest.fixture
def archive(tmp_path):
    d = tmp_path / BASE_NAME
    d.mkdir()
    (d / "meta.pickle.pbz2").write_bytes(b"")
    return d


def test_query_reads_the_benchmark_conventions(fake_nats, archive):
    bench = NATSBench(archive.parent)
    api = fake_nats[0]
    assert api.fast_mode and api.path == str(archive)  # per-architecture loading, never the whole benchmark
    c10 = bench.query(IS_DARTS, "cifar10", 200)
    assert (c10.index, c10.valid_acc, c10.test_acc) == (1, 91.55, 94.36)
    assert (c10.params_m, c10.flops_m, c10.latency_ms) == (1.29, 184.7, 18.5)
    c100 = bench.query(IS_DARTS, "cifar100", 12)
    assert (c100.valid_acc, c100.test_acc, c100.params_m) == pytest.approx((63.49, 63.51, 1.31))
    assert bench.query(IS_DARTS, "ImageNet16-120").test_acc == 46.34
    assert api.loaded == {1}
    text = format_nats([c10, c100])
    assert "#1" in text and "valid 91.55  test 94.36" in text and "12 epochs" in text


def test_the_directory_itself_or_torch_home(fake_nats, archive, monkeypatch):
    assert NATSBench(archive).dir == archive
    monkeypatch.setenv("TORCH_HOME", str(archive.parent))
    assert NATSBench().dir == archive


def test_cli_bench_with_nats_files(fake_nats, archive, capsys):
    assert main(["bench", "nb201", IS_DARTS, "--nats-dir", str(archive.parent), "--dataset", "cifar10",
                 "--epochs", "200"]) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and "valid 91.55  test 94.36" in out and "params 1.290 M" in out


def test_missing_files_say_which_and_where(tmp_path, capsys, monkeypatch):
    with pytest.raises(GradnasError, match=f"{BASE_NAME}.*TORCH_HOME.*--nats-dir"):
        NATSBench(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "nothing"))
    assert main(["bench", "nb201", IS_DARTS, "--nats-dir"]) == 2
    err = capsys.readouterr().err.strip()
    assert BASE_NAME in err and str(tmp_path / "nothing") in err and len(err.splitlines()) == 1


def test_missing_package_names_the_extra(archive, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)
    with pytest.raises(GradnasError, match=r"gradnas\[nats\]"):
        NATSBench(archive)


def test_bad_queries(fake_nats, archive):
    bench = NATSBench(archive)
    with pytest.raises(GradnasError, match="no entry"):
        bench.query("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(GradnasError, match="unknown dataset"):
        bench.query(IS_DARTS, "mnist")
    with pytest.raises(GradnasError, match="12 and 200"):
        bench.query(IS_DARTS, epochs=90)

    def unreadable(*args, **kwargs):
        raise AssertionError("invalid data path")

    bench.api.get_more_info = unreadable
    with pytest.raises(GradnasError, match="000001.pickle.pbz2"):
        bench.query(IS_DARTS)


def test_real_nats_bench_package_on_a_small_archive(tmp_path):
    """Two architectures written in the benchmark's own format with nats_bench's classes, read back through it."""
    api_utils = pytest.importorskip("nats_bench.api_utils", reason="nats_bench is not installed (the nats extra)")
    d = tmp_path / BASE_NAME
    d.mkdir()
    api_utils.pickle_save({"meta_archs": ARCHS}, d / "meta.pickle")
    sets = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
            "cifar100": ("x-valid", "x-test", "ori-test"), "ImageNet16-120": ("x-valid", "x-test", "ori-test")}
    base = {("cifar10-valid", "x-valid"): 80.0, ("cifar10-valid", "ori-test"): 70.0, ("cifar10", "ori-test"): 85.0,
            ("cifar100", "x-valid"): 60.0, ("cifar100", "x-test"): 61.0, ("cifar100", "ori-test"): 62.0,
            ("ImageNet16-120", "x-valid"): 30.0, ("ImageNet16-120", "x-test"): 31.0, ("ImageNet16-120", "ori-test"): 32.0}
    for index, arch in enumerate(ARCHS):
        per_hp = {}
        for hp in ("12", "200"):
            epochs = int(hp)
            results = api_utils.ArchResults(index, arch)
            for dataset, names in sets.items():
                for seed, noise in ((777, -1.0), (888, 1.0)):  # the mean over the two seeds cancels the noise
                    acc = lambda name: base[dataset, name] + 5 * index + (0 if hp == "200" else -10) + noise
                    r = api_utils.ResultsCount(dataset, None, {e: 50.0 for e in range(epochs)},
                                               {e: 1.0 for e in range(epochs)}, 0.1 + index, 20.0 + index, {}, seed,
                                               epochs, [0.01 * (index + 1)])
                    keys = [f"{n}@{e}" for n in names for e in range(epochs)]
                    r.update_eval({k: acc(k.split("@")[0]) for k in keys}, {k: 1.0 for k in keys},
                                  {k: 0.1 for k in keys})
                    results.update(dataset, seed, r)
            per_hp[hp] = results.state_dict()
        api_utils.pickle_save(per_hp, d / f"{index:06d}.pickle")
    bench = NATSBench(tmp_path)
    e = bench.query(IS_DARTS, "cifar10", 200)
    assert (e.index, e.valid_acc, e.test_acc, e.params_m, e.flops_m, e.latency_ms) == pytest.approx(
        (1, 85.0, 90.0, 1.1, 21.0, 20.0))
    e = bench.query(IS_DARTS, "imagenet16-120", 12)
    assert (e.valid_acc, e.test_acc) == pytest.approx((25.0, 26.0))
    assert set(bench.api.arch2infos_dict) == {1}  # only the asked architecture was loaded
