"""The planted-effect dataset: real backgrounds (EEG and MEG), BIDS with events.tsv, built
through the same path as real data; learnable across subjects, chance when shuffled.

The issue's done-when, end to end: ``brainomni finetune --recipe planted --source BIDS``
(the set built through build_labelled_set and cached) reaches balanced accuracy >= 0.9
across subject folds, a label-shuffled copy given as ``--set`` stays at chance +- 0.1, no
subject is in two of train / val / test. One planted BIDS and one process group per module.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from brainomni.evaluation.planted import (
    FINETUNE_PRESET,
    band_power_check,
    band_power_features,
    build_planted_bids,
)
from brainomni.evaluation.recipes import get_recipe
from brainomni.evaluation.windows import build_labelled_set
from brainomni.records import EEG, MAG
from brainomni.signal.config import DEFAULT_CONFIG


@pytest.fixture(scope="module")
def planted(tmp_path_factory, meeg_dir):
    root = tmp_path_factory.mktemp("planted")
    subjects = build_planted_bids(
        str(root / "bids"), seed=1, data_root=str(meeg_dir), **FINETUNE_PRESET
    )
    recipe = get_recipe("planted")
    ls = build_labelled_set(recipe, str(root / "bids"), work_dir=str(root / "work"))
    return root, subjects, recipe, ls


def test_planted_set_goes_through_the_real_path(planted):
    root, subjects, recipe, ls = planted
    n, per = FINETUNE_PRESET["n_subjects"], FINETUNE_PRESET["n_events"]
    assert ls.meta["outcomes"] == {"ok": n} and ls.meta["source_kind"] == "bids"
    assert ls.meta["clean_config_hash"] == DEFAULT_CONFIG.hash
    assert ls.meta["recipe_hash"] == recipe.hash
    assert len(ls) == n * per and ls.counts() == {"alpha10": n * per // 2, "beta20": n * per // 2}
    assert {s.modality for s in subjects} == {"eeg", "meg"}
    types = {int(t) for w in ls.windows for t in np.unique(w.sensor_type)}
    assert {EEG, MAG} <= types  # an EEG and a MEG geometry
    assert sorted(set(ls.subjects)) == [f"planted/{s.subject}" for s in subjects]


def test_planted_windows_start_at_the_events(planted):
    root, subjects, _, ls = planted
    for s in subjects:
        tsv = next((root / "bids" / f"sub-{s.subject}").rglob("*_events.tsv"))
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        exp = sorted((round(float(r["onset"]) * 256), r["trial_type"]) for r in rows)
        got = sorted(
            (round(w.onset_s * 256), ls.classes[w.label])
            for w in ls.windows
            if w.subject == f"planted/{s.subject}"
        )
        assert got == exp


def test_planted_is_learnable_and_shuffled_labels_are_not(planted):
    *_, ls = planted
    x = band_power_features(ls)
    assert band_power_check(ls, folds=3, features=x) >= 0.9
    shuffled = [band_power_check(ls, folds=3, shuffle=True, seed=s, features=x) for s in range(20)]
    assert 0.3 <= float(np.mean(shuffled)) <= 0.7


def test_planted_round_trip_with_mixed_devices(planted, tmp_path):
    """EEG (17 channels) and MEG (24) windows in one saved set come back equal."""
    from brainomni.evaluation.windows import load_labelled_set, save_labelled_set

    *_, ls = planted
    assert len({w.signal.shape[0] for w in ls.windows}) == 2
    save_labelled_set(ls, str(tmp_path / "s"))
    back = load_labelled_set(str(tmp_path / "s"))
    assert back.meta == ls.meta and back.classes == ls.classes
    for a, b in zip(ls.windows, back.windows, strict=True):
        assert (a.label, a.subject, a.onset_s) == (b.label, b.subject, b.onset_s)
        np.testing.assert_array_equal(a.signal, b.signal)
        np.testing.assert_array_equal(a.sensors, b.sensors)


# --------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def ctx(dist_ctx):
    return dist_ctx  # one process group for the package (tests/evaluation/conftest.py)


@pytest.fixture(scope="module")
def finetuned(planted, ctx):
    """``brainomni finetune --recipe planted --source BIDS`` with a tiny export (random
    tokenizer, centred, k-means codebooks) and the cpu-test-finetune protocol."""
    from brainomni.cli import main
    from tests.evaluation.synthetic import tiny_export

    root, _, _, ls = planted
    export = tiny_export(root / "export", ls)
    argv = ["finetune", "--recipe", "planted", "--source", str(root / "bids")]
    argv += ["--work-dir", str(root / "work"), "--checkpoint", str(export)]
    argv += ["--out", str(root / "run"), "--protocol", "cpu-test-finetune", "--no-plots"]
    assert main(argv) == 0
    return root, export, argv, json.loads((root / "run" / "results.json").read_text())


def _baccs(res: dict) -> list[float]:
    return [r["balanced_accuracy"] for r in res["models"]["brainomni"]["runs"]]


def test_finetune_from_a_source_learns_the_planted_effect_across_subject_folds(planted, finetuned):
    _, _, recipe, ls = planted
    root, export, _, res = finetuned
    baccs = _baccs(res)
    assert len(baccs) == recipe.folds == 3  # the recipe's folds, not the protocol's default
    assert float(np.mean(baccs)) >= 0.9
    # the set the CLI built is the one build_labelled_set gives (same windows, same meta)
    assert res["set"]["windows"] == len(ls) and res["recipe"] == "planted"
    assert res["recipe_hash"] == recipe.hash
    assert res["set"]["meta"]["clean_config_hash"] == DEFAULT_CONFIG.hash
    from brainomni.train.export import file_sha256

    sha = file_sha256(export / "model.safetensors")
    assert res["models"]["brainomni"]["identity"]["weights_sha256"] == sha


def test_no_subject_is_in_two_parts_and_the_epoch_is_chosen_on_validation(planted, finetuned):
    *_, ls = planted
    root, *_ = finetuned
    everyone = set(ls.subjects.tolist())
    tested = []
    units = sorted((root / "run" / "units").rglob("result.json"))
    assert len(units) == 3
    for f in units:
        u = json.loads(f.read_text())
        tr, va, te = (set(u["subjects"][k]) for k in ("train", "val", "test"))
        assert not (tr & va or tr & te or va & te) and tr | va | te == everyone
        tested += sorted(te)
        vals = [h["val"]["balanced_accuracy"] for h in u["history"]]
        assert u["best_epoch"] == 1 + int(np.argmax(vals))  # first best on ties
    assert sorted(tested) == sorted(everyone)  # each subject tested exactly once


def test_demo_summary_prints_each_models_balanced_accuracy(finetuned):
    """``make demo``'s last table (demo/finetune.py) from a downstream results.json: the
    balanced accuracy per fold recomputed from each unit's saved test predictions."""
    from sklearn.metrics import balanced_accuracy_score

    from brainomni.evaluation.finetune import load_predictions
    from demo.finetune import LABELS, balanced_accuracies, summary_lines

    root, _, _, res = finetuned
    per_fold = []
    for d in sorted(p.parent for p in (root / "run" / "units").rglob("result.json")):
        z = load_predictions(d)
        per_fold.append(balanced_accuracy_score(z["test_labels"], z["test_prob"].argmax(-1)))
    got = balanced_accuracies(res)
    assert list(got) == ["brainomni"]
    np.testing.assert_allclose(sorted(got["brainomni"]["runs"]), sorted(per_fold), atol=1e-9)
    assert got["brainomni"]["mean"] == pytest.approx(float(np.mean(per_fold)))
    lines = summary_lines(res)
    (row,) = [r for r in lines if r.startswith(f"| {LABELS['brainomni']} |")]
    assert f"{np.mean(per_fold):.3f} ± " in row
    assert row.count(", ") == len(per_fold) - 1  # one value per fold


def test_a_second_run_reuses_the_cached_set_and_the_finished_units(finetuned):
    from brainomni.cli import main

    root, _, argv, res = finetuned
    (cached,) = (root / "work" / "sets").glob("planted-*/labelled_set.json")
    units = sorted((root / "run" / "units").rglob("result.json"))
    stamps = [p.stat().st_mtime_ns for p in (cached, *units)]
    assert main(argv) == 0
    assert [p.stat().st_mtime_ns for p in (cached, *units)] == stamps
    again = json.loads((root / "run" / "results.json").read_text())
    assert _baccs(again) == _baccs(res)


def test_label_shuffled_control_given_as_a_saved_set_stays_at_chance(planted, finetuned):
    from brainomni.cli import main
    from brainomni.evaluation.data import LabelledSet, Window
    from brainomni.evaluation.windows import load_labelled_set, save_labelled_set

    root, export, *_ = finetuned
    (cached,) = (root / "work" / "sets").glob("planted-*")
    ls = load_labelled_set(str(cached))
    y = np.random.default_rng(0).permutation(ls.labels)
    shuffled = LabelledSet(
        [
            Window(w.signal, w.sensors, w.sensor_type, int(v), w.subject, w.recording_id, w.onset_s)
            for w, v in zip(ls.windows, y, strict=True)
        ],
        ls.classes,
        "planted-shuffled",
        ls.meta,
    )
    save_labelled_set(shuffled, str(root / "shuffled"))
    argv = ["finetune", "--set", str(root / "shuffled"), "--checkpoint", str(export)]
    argv += ["--out", str(root / "run-shuffled"), "--protocol", "cpu-test-finetune"]
    assert main([*argv, "--no-plots"]) == 0
    res = json.loads((root / "run-shuffled" / "results.json").read_text())
    assert abs(float(np.mean(_baccs(res))) - 0.5) <= 0.1


def test_labelled_set_command_saves_what_the_builder_builds(planted, tmp_path, capsys):
    """``brainomni labelled-set`` (stores reused from the fixture's work dir) saves the same
    windows and ledger as build_labelled_set; its summary counts them."""
    from brainomni.cli import main
    from brainomni.evaluation.windows import load_labelled_set

    root, _, _, ls = planted
    argv = ["labelled-set", "--recipe", "planted", "--source", str(root / "bids")]
    assert main([*argv, "--out", str(tmp_path / "s"), "--work-dir", str(root / "work")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    back = load_labelled_set(str(tmp_path / "s"))
    assert summary["windows"] == len(back) == len(ls) and summary["classes"] == ls.counts()
    assert back.meta["recordings"] == ls.meta["recordings"]
    for a, b in zip(ls.windows, back.windows, strict=True):
        assert (a.subject, a.label, a.onset_s) == (b.subject, b.label, b.onset_s)
        np.testing.assert_array_equal(a.signal, b.signal)
