"""Fine-tuning under cross-subject folds on CPU (DeepSpeed ZeRO-2, gloo, one rank): the
planted effect is learned, shuffled labels stay at chance, test windows are never used to
choose anything, resume by unit, the CLI end to end. One process group for the module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainomni.evaluation import finetune as ft
from brainomni.evaluation.data import LabelledSet
from brainomni.evaluation.report import write_report
from brainomni.train.export import file_sha256
from tests.evaluation.synthetic import planted_set, tiny_export

pytest.importorskip("deepspeed", reason="fine-tuning runs on DeepSpeed")


@pytest.fixture(scope="module")
def ctx(dist_ctx):
    return dist_ctx  # one process group for the package (tests/evaluation/conftest.py)


@pytest.fixture(scope="module")
def planted() -> LabelledSet:
    return planted_set()


@pytest.fixture(scope="module")
def export(tmp_path_factory, planted) -> Path:
    return tiny_export(tmp_path_factory.mktemp("export") / "omni", planted)


def _mean_test(entry, key="balanced_accuracy") -> float:
    return float(np.mean([u["test"][key] for u in entry["units"]]))


def test_planted_effect_is_learned_across_subject_folds(tmp_path, ctx, planted, export):
    cfg = ft.cpu_test_finetune()
    entry = ft.run_grid(planted, tmp_path, cfg, ft.Backbone(str(export)), ctx=ctx)
    assert len(entry["units"]) == cfg.folds
    assert _mean_test(entry) >= 0.9
    everyone = set(planted.subjects.tolist())
    for u in entry["units"]:
        tr, va, te = (set(u["subjects"][k]) for k in ("train", "val", "test"))
        assert not (tr & va or tr & te or va & te) and tr | va | te == everyone
        assert u["best_epoch"] == 1 + int(
            np.argmax([h["val"]["balanced_accuracy"] for h in u["history"]])
        )
    assert entry["identity"]["weights_sha256"] == file_sha256(export / "model.safetensors")
    res = write_report(tmp_path, planted, cfg, [entry])
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["models"]["brainomni"]
    assert m["summary"]["balanced_accuracy"]["mean"] == pytest.approx(_mean_test(entry))
    assert m["summary"]["auroc"]["mean"] == pytest.approx(_mean_test(entry, "auroc"))
    assert saved["set"]["meta"] == planted.meta and saved["protocol_name"] == cfg.recipe
    assert saved["recipe"] == planted.meta["recipe"]
    assert saved["seeds"] == [42]
    assert "| brainomni |" in (tmp_path / "results.md").read_text()
    for f in res["plots"]["brainomni"]:
        assert Path(f).read_bytes()[:4] == b"\x89PNG"


def test_shuffled_labels_stay_at_chance(tmp_path, ctx, export):
    shuffled = planted_set(shuffle_labels=True)
    entry = ft.run_grid(
        shuffled, tmp_path, ft.cpu_test_finetune(), ft.Backbone(str(export)), ctx=ctx
    )
    assert abs(_mean_test(entry) - 0.5) <= 0.1


class _Logged(list):
    """A window list that records which indices are read, in order."""

    def __init__(self, items):
        super().__init__(items)
        self.reads: list[int] = []

    def __getitem__(self, i):
        self.reads.append(int(i))
        return super().__getitem__(i)


def test_test_windows_are_read_once_after_training_and_selection(ctx, planted, export):
    logged = LabelledSet(_Logged(planted.windows), planted.classes, planted.name, planted.meta)
    fold = ft.folds_for(logged, k=3, seed=42)[0]
    tr, va, te = fold.indices(logged)
    cfg = ft.apply_overrides(ft.cpu_test_finetune(), ["epochs=3", "patience=3"])
    rec, preds = ft.train_unit(logged, fold, 1e-3, 42, cfg, ft.Backbone(str(export)), ctx)
    reads = logged.windows.reads
    test_reads = [i for i, r in enumerate(reads) if r in set(te.tolist())]
    assert sorted(reads[test_reads[0] :]) == sorted(te.tolist())  # the last reads, each once
    assert len(test_reads) == len(te)
    assert set(reads[: test_reads[0]]) == set(tr.tolist()) | set(va.tolist())
    assert preds["test_prob"].shape == (len(te), 2) and rec["epochs_run"] == 3


def _stub(val_by_lr, test_by_lr, calls):
    """A trainer stand-in with chosen validation and test accuracies per LR."""

    def trainer(windows, fold, lr, seed, cfg, spec, ctx):
        calls.append((lr, seed, fold.index))
        y = np.array([0, 1])
        prob = np.array([[0.6, 0.4], [0.4, 0.6]])
        rec = {
            "lr": lr,
            "seed": seed,
            "fold": fold.index,
            "subjects": {"train": fold.train, "val": fold.val, "test": fold.test},
            "val": {"balanced_accuracy": val_by_lr[lr] + 0.01 * fold.index},
            "test": {"balanced_accuracy": test_by_lr[lr], "auroc": test_by_lr[lr]},
        }
        return rec, {"val_labels": y, "val_prob": prob, "test_labels": y, "test_prob": prob}

    return trainer


def test_lr_is_chosen_on_validation_even_when_test_says_otherwise(tmp_path, ctx, planted, export):
    # test made easier for the large LR: selecting by test (the official metrics_stat.py)
    # would choose 1e-3; validation prefers 1e-4
    val, test = {1e-4: 0.80, 1e-3: 0.70}, {1e-4: 0.60, 1e-3: 0.99}
    cfg = ft.apply_overrides(ft.cpu_test_finetune(), ["lrs=[1e-4,1e-3]", "seeds=[42,3407]"])
    calls: list = []
    entry = ft.run_grid(
        planted, tmp_path, cfg, ft.Backbone(str(export)), ctx=ctx, trainer=_stub(val, test, calls)
    )
    assert len(calls) == 2 * 2 * cfg.folds
    by_test = max(test, key=test.get)
    assert entry["selection"]["lr"] == 1e-4 != by_test
    assert {u["lr"] for u in entry["units"]} == {1e-4} and len(entry["units"]) == 2 * cfg.folds
    assert _mean_test(entry) == pytest.approx(0.60)


def test_a_killed_run_resumes_from_its_last_finished_unit(tmp_path, ctx, planted, export):
    cfg = ft.apply_overrides(ft.cpu_test_finetune(), ["lrs=[1e-4,1e-3]"])
    val, test = {1e-4: 0.8, 1e-3: 0.7}, {1e-4: 0.6, 1e-3: 0.5}
    calls: list = []
    inner = _stub(val, test, calls)

    def dies_on_unit_4(*a):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is killed while training its 4th unit
        return inner(*a)

    spec = ft.Backbone(str(export))
    with pytest.raises(KeyboardInterrupt):
        ft.run_grid(planted, tmp_path, cfg, spec, ctx=ctx, trainer=dies_on_unit_4)
    assert len(list(tmp_path.rglob(ft.RESULT))) == 3
    done = list(calls)
    calls.clear()
    entry = ft.run_grid(planted, tmp_path, cfg, spec, ctx=ctx, trainer=inner)
    assert len(calls) == 2 * cfg.folds - 3 and not set(calls) & set(done)
    assert len(entry["all_units"]) == 2 * cfg.folds
    # another protocol into the same folder is refused, naming the file
    other = ft.apply_overrides(cfg, ["epochs=3"])
    with pytest.raises(ValueError, match="another run"):
        ft.run_grid(planted, tmp_path, other, spec, ctx=ctx, trainer=inner)


def test_frozen_backbone_and_ten_times_head_lr(ctx, planted, export):
    cfg = ft.apply_overrides(ft.cpu_test_finetune(), ["frozen=true"])
    model = ft.Classifier(ft.build_backbone(ft.Backbone(str(export)), 0), 2, frozen=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = ft._engine(model, cfg, 1e-3, 0, 10, ctx)
    b = ft.collate(planted.windows[:8])
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(engine(*ft._inputs(b, ctx.device)), b["y"])
        engine.backward(loss)
        engine.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    full = ft.Classifier(ft.build_backbone(ft.Backbone(str(export)), 0), 2)
    eng = ft._engine(full, ft.cpu_test_finetune(), 1e-3, 0, 10, ctx)
    # the peak LR of each non-empty AdamW group (the pretraining grouping: decay / no decay;
    # backbone groups first, then head); the head's Linear layers all decay under the
    # official rule (biases included), so the head may have one group only
    from brainomni.train.optim import param_groups

    wd = ft.cpu_test_finetune().weight_decay
    n_bb = sum(1 for g in param_groups(full.backbone, wd) if g["params"])
    n_head = sum(1 for g in param_groups(full.head, wd) if g["params"])
    assert n_bb >= 1 and n_head >= 1
    assert eng.lr_scheduler.org_lrs == pytest.approx([1e-3] * n_bb + [1e-2] * n_head)
    assert len(eng.optimizer.param_groups) == n_bb + n_head


def test_random_init_keeps_the_tokenizer_and_redraws_brainomni(export):
    pre = ft.build_backbone(ft.Backbone(str(export)), 0)
    rnd = ft.build_backbone(ft.Backbone(str(export), "random"), 0)
    again = ft.build_backbone(ft.Backbone(str(export), "random"), 0)
    p, r, a = pre.state_dict(), rnd.state_dict(), again.state_dict()
    assert all(torch.equal(p[k], r[k]) for k in p if k.startswith("tokenizer."))
    assert not torch.equal(p["projection.weight"], r["projection.weight"])
    assert all(torch.equal(r[k], a[k]) for k in r)  # seeded
    with pytest.raises(ValueError, match="brainomni export"):
        ft.build_backbone(ft.Backbone(str(export.parent)), 0)


def test_cli_evaluate_downstream_end_to_end(tmp_path, ctx, planted, export):
    from brainomni.cli import main
    from brainomni.evaluation.windows import save_labelled_set

    save_labelled_set(planted, str(tmp_path / "planted"))
    out = tmp_path / "eval"
    argv = ["evaluate", "downstream", "--set", str(tmp_path / "planted")]
    argv += ["--checkpoint", str(export), "--out", str(out), "--protocol", "cpu-test-finetune"]
    argv += ["epochs=2", "--sfreq", "256"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"brainomni", "random-init", "bandpower"}
    sha = file_sha256(export / "model.safetensors")
    assert res["models"]["brainomni"]["identity"]["weights_sha256"] == sha
    assert res["protocol"]["epochs"] == 2
    md = (out / "results.md").read_text()
    for name in ("brainomni", "random-init", "bandpower"):
        assert f"| {name} |" in md
        assert (out / "plots" / f"confusion-{name}.png").exists()
        assert (out / "plots" / f"roc-{name}.png").exists()


def test_a_set_with_nan_windows_is_refused_naming_the_recording(tmp_path, export):
    from brainomni.evaluation.data import Window

    ws = planted_set(n_subjects=3, per_class=1)
    w = ws.windows[0]
    sig = w.signal.copy()
    sig[0, 5] = np.nan
    ws.windows[0] = Window(sig, w.sensors, w.sensor_type, w.label, w.subject, "synth/broken")
    with pytest.raises(ValueError, match="synth/broken"):
        ft.run_grid(ws, tmp_path, ft.cpu_test_finetune(), ft.Backbone(str(export)))


def test_an_easier_test_set_changes_no_choice(tmp_path, ctx, export):
    """Two sets that differ only in their (official) test subjects' windows, the second's
    made easier: LR, checkpoints and validation numbers must be the same, only test moves."""
    hard, easy = planted_set(effect=2.0), planted_set(effect=2.0)
    official = ["synth/sub-00", "synth/sub-01", "synth/sub-02"]
    strong = planted_set(effect=12.0)
    for s in (hard, easy):
        s.meta["official_split"] = {x: "eval" for x in official}
    easy.windows[:] = [
        strong.windows[i] if w.subject in official else w for i, w in enumerate(easy.windows)
    ]
    cfg = ft.apply_overrides(
        ft.cpu_test_finetune(), ["lrs=[3e-4,1e-3]", "folds=2", "epochs=3", "patience=3"]
    )
    spec = ft.Backbone(str(export))
    a = ft.run_grid(hard, tmp_path / "hard", cfg, spec, ctx=ctx)
    b = ft.run_grid(easy, tmp_path / "easy", cfg, spec, ctx=ctx)
    assert a["selection"]["lr"] == b["selection"]["lr"]
    assert a["selection"]["table"] == pytest.approx(b["selection"]["table"], abs=1e-12)
    for u, v in zip(a["all_units"], b["all_units"], strict=True):
        assert (u["lr"], u["fold"], u["best_epoch"]) == (v["lr"], v["fold"], v["best_epoch"])
        assert u["val"]["balanced_accuracy"] == pytest.approx(
            v["val"]["balanced_accuracy"], abs=1e-12
        )
    # the test windows did differ, and so did what the model said about them
    pa = ft.load_predictions(Path(a["units"][0]["dir"]))["test_prob"]
    pb = ft.load_predictions(Path(b["units"][0]["dir"]))["test_prob"]
    assert pa.shape == pb.shape and not np.allclose(pa, pb)
