"""Labelled windows from real recordings with real events, through the pretraining chain.

Expected window starts and labels are computed here independently, from MNE's own reading
of each file's annotations / stim channel and the recipe's offsets; window contents from the
store with a hand-written normalisation (not the pack's function).
"""

from __future__ import annotations

import json
import os

import mne
import numpy as np
import pytest

from brainomni.evaluation.folds import folds_for
from brainomni.evaluation.labels import (
    LabelError,
    read_events_tsv,
    read_label_table,
    read_tuev_rec,
    tuab_label,
)
from brainomni.evaluation.recipes import recipe_from_dict
from brainomni.evaluation.windows import (
    build_labelled_set,
    load_labelled_set,
    save_labelled_set,
)
from brainomni.signal.config import DEFAULT_CONFIG
from tests.conftest import meeg_file

SF = DEFAULT_CONFIG.sfreq
EDF = "EDF/test_edf_overlapping_annotations.edf"
EDF_RECIPE = {
    "name": "edf-mi",
    "classes": ["rest", "left", "right"],
    "labels": "events",
    "label_map": {"T0": "rest", "T1": "left", "T2": "right"},
    "window_s": 4.0,
    "tmin_s": -0.5,
    "line_freq": 60.0,
}


def _expected(raw, mapping, tmin_s, window_s, n_times_out):
    """(start sample, label) of every annotation in ``mapping`` whose window fits the store."""
    offset = raw.first_time if raw.annotations.orig_time is not None else 0.0
    w = int(round(window_s * SF))
    out = []
    for a in raw.annotations:
        lab = mapping.get(a["description"])
        s = int(round((a["onset"] - offset + tmin_s) * SF))
        if lab is not None and s >= 0 and s + w <= n_times_out:
            out.append((s, lab))
    return sorted(out)


@pytest.fixture(scope="module")
def edf_set(tmp_path_factory):
    path = meeg_file(EDF)
    recipe = recipe_from_dict(EDF_RECIPE)
    work = tmp_path_factory.mktemp("edf")
    return recipe, build_labelled_set(recipe, [str(path)], work_dir=str(work)), path, work


def test_edf_event_windows_match_annotations(edf_set):
    recipe, ls, path, work = edf_set
    raw = mne.io.read_raw_edf(path, verbose="error")
    assert len(raw.annotations) == 38
    n_out = int(np.floor(raw.n_times * SF / raw.info["sfreq"]))
    exp = _expected(raw, {"T0": 0, "T1": 1, "T2": 2}, -0.5, 4.0, n_out)
    got = sorted((int(round(w.onset_s * SF)), w.label) for w in ls.windows)
    assert got == exp and len(got) >= 30
    # the first event (onset 0) starts 0.5 s before the recording: rejected, and counted
    assert ls.meta["rejected"].get("out_of_range", 0) == 38 - len(exp)
    assert ls.counts() == {c: sum(1 for _, k in exp if k == i) for i, c in enumerate(ls.classes)}
    assert all(w.subject == "edf-mi/test_edf_overlapping_annotations" for w in ls.windows)
    assert all(w.signal.shape == (64, int(recipe.window_s * SF)) for w in ls.windows)


def test_edf_meta_records_hashes_and_ledger(edf_set):
    recipe, ls, _, work = edf_set
    assert ls.meta["clean_config_hash"] == DEFAULT_CONFIG.hash
    assert ls.meta["recipe_hash"] == recipe.hash and ls.meta["recipe"] == "edf-mi"
    (entry,) = ls.meta["recordings"]
    assert entry["outcome"] == "ok" and entry["events"] == {"source": "annotations", "n": 38}
    store = os.path.join(work, "recordings", "edf-mi", f"{entry['recording_id']}.zarr")
    with open(os.path.join(store, "zarr.json")) as fh:
        attrs = json.load(fh)["attributes"]
    assert attrs["config_hash"] == ls.meta["clean_config_hash"]


def test_window_content_is_the_pretraining_normalisation(edf_set):
    """Recompute two windows from the store by hand: common average per time point, divided
    by the group std + eps (spec §2.11), float16."""
    import zarr

    _, ls, _, work = edf_set
    rid = ls.windows[0].recording_id
    g = zarr.open_group(os.path.join(work, "recordings", "edf-mi", f"{rid}.zarr"), mode="r")
    for w in (ls.windows[0], ls.windows[-1]):
        s = int(round(w.onset_s * SF))
        x = np.asarray(g["signal"][:, s : s + w.signal.shape[1]], dtype=np.float64)
        x = x - x.mean(axis=0)
        ref = x / (x.std() + 1e-5)
        np.testing.assert_allclose(w.signal.astype(np.float64), ref, rtol=2e-3, atol=2e-3)
        assert w.signal.dtype == np.float16
    # positions: centred, RMS radius 1/sqrt(3) per axis (spec §2.6)
    p = ls.windows[0].sensors[:, :3].astype(np.float64)
    np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(3 * np.mean(np.sum(p**2, axis=1))), 1.0, rtol=1e-4)


def test_save_load_round_trip_and_tampering(edf_set, tmp_path):
    _, ls, _, _ = edf_set
    dest = tmp_path / "set"
    save_labelled_set(ls, str(dest))
    back = load_labelled_set(str(dest))
    assert back.classes == ls.classes and back.name == ls.name and back.meta == ls.meta
    assert len(back) == len(ls)
    for a, b in zip(ls.windows, back.windows, strict=True):
        assert (a.label, a.subject, a.recording_id, a.onset_s) == (
            b.label,
            b.subject,
            b.recording_id,
            b.onset_s,
        )
        np.testing.assert_array_equal(a.signal, b.signal)
        np.testing.assert_array_equal(a.sensors, b.sensors)
        np.testing.assert_array_equal(a.sensor_type, b.sensor_type)
    # a changed byte in the tar, or an index that lies, is refused naming the file
    tar = dest / "windows.tar"
    blob = bytearray(tar.read_bytes())
    blob[2000] ^= 1
    tar.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="labelled_set.json.*sha256"):
        load_labelled_set(str(dest))
    blob[2000] ^= 1
    tar.write_bytes(bytes(blob))
    idx = json.loads((dest / "labelled_set.json").read_text())
    idx["n_windows"] = len(ls) + 1
    (dest / "labelled_set.json").write_text(json.dumps(idx))
    with pytest.raises(ValueError, match="index says"):
        load_labelled_set(str(dest))
    idx["classes"] = ["only"]
    idx["n_windows"] = len(ls)
    (dest / "labelled_set.json").write_text(json.dumps(idx))
    with pytest.raises(ValueError, match="out of range"):
        load_labelled_set(str(dest))


BIOSEMI32 = [
    "Fp1",
    "AF3",
    "F7",
    "F3",
    "FC1",
    "FC5",
    "T7",
    "C3",
    "CP1",
    "CP5",
    "P7",
    "P3",
    "Pz",
    "PO3",
    "O1",
    "Oz",
    "O2",
    "PO4",
    "P4",
    "P8",
    "CP6",
    "CP2",
    "C4",
    "T8",
    "FC6",
    "FC2",
    "F4",
    "F8",
    "AF4",
    "Fp2",
    "Fz",
    "Cz",
]


def test_eeglab_annotations_with_recipe_channel_fixes(tmp_path):
    """test_raw.set has no positions: the recipe's rename (to 10-20 names) places it, as a
    catalog fix would; its 154 annotations ('rt', 'square') become labelled windows."""
    path = meeg_file("EEGLAB/test_raw.set")
    raw = mne.io.read_raw_eeglab(path, verbose="error")
    assert len(raw.annotations) == 154
    recipe = recipe_from_dict(
        {
            "name": "eeglab",
            "classes": ["square", "rt"],
            "labels": "events",
            "window_s": 1.0,
            "tmin_s": -0.25,
            "rename": {f"EEG {i:03d}": n for i, n in enumerate(BIOSEMI32)},
        }
    )
    ls = build_labelled_set(recipe, [str(path)], work_dir=str(tmp_path))
    n_out = int(np.floor(raw.n_times * SF / raw.info["sfreq"]))
    exp = _expected(raw, {"square": 0, "rt": 1}, -0.25, 1.0, n_out)
    got = sorted((int(round(w.onset_s * SF)), w.label) for w in ls.windows)
    rejected = sum(ls.meta["rejected"].values())
    assert len(got) + rejected == 154 and len(got) > 100
    assert set(got) <= set(exp)  # every kept window is an expected one (others: QC-rejected)
    # the same real events through the CLI, from a recipes TOML and the file as the user has
    # it: the set is built and saved, and fine-tuning refuses it naming the fix (one
    # recording = one subject cannot make subject folds)
    from brainomni.cli import main

    rename = ", ".join(f'"EEG {i:03d}" = "{n}"' for i, n in enumerate(BIOSEMI32))
    toml = tmp_path / "recipes.toml"
    toml.write_text(
        '[[recipe]]\nname = "eeglab"\nclasses = ["square", "rt"]\nlabels = "events"\n'
        f"window_s = 1.0\ntmin_s = -0.25\nrename = {{ {rename} }}\n"
    )
    argv = ["--recipes", str(toml), "--recipe", "eeglab", "--source", str(path)]
    argv += ["--work-dir", str(tmp_path)]
    assert main(["labelled-set", *argv, "--out", str(tmp_path / "set")]) == 0
    assert len(load_labelled_set(str(tmp_path / "set"))) == len(ls)
    with pytest.raises(SystemExit, match="1 subjects cannot make 5 subject folds; lower"):
        main(["finetune", *argv, "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")])


def test_bdf_stim_channel_events(tmp_path):
    path = meeg_file("BDF/test_bdf_stim_channel.bdf")
    raw = mne.io.read_raw_bdf(path, verbose="error")
    ev = mne.find_events(raw, shortest_event=1, consecutive=True, verbose="error")
    assert len(ev) > 0
    codes = sorted({str(int(c)) for c in ev[:, 2]})
    recipe = recipe_from_dict(
        {
            "name": "bdf",
            "classes": ["first", "other"],
            "labels": "events",
            "event_source": "stim",
            "label_map": {c: ("first" if i == 0 else "other") for i, c in enumerate(codes)},
            "window_s": 0.5,
            "line_freq": 50.0,
        }
    )
    if len(codes) < 2:
        pytest.skip(f"stim channel has one code only: {codes}")
    ls = build_labelled_set(recipe, [str(path)], work_dir=str(tmp_path))
    n_out = int(np.floor(raw.n_times * SF / raw.info["sfreq"]))
    w = int(0.5 * SF)
    exp = sorted(
        (int(round((s - raw.first_samp) / raw.info["sfreq"] * SF)), 0 if str(c) == codes[0] else 1)
        for s, _, c in ev
        if int(round((s - raw.first_samp) / raw.info["sfreq"] * SF)) + w <= n_out
    )
    got = sorted((int(round(x.onset_s * SF)), x.label) for x in ls.windows)
    assert got == exp
    assert ls.meta["recordings"][0]["events"]["source"] == "stim"


def test_tuh_labels_from_paths_and_rec_files(tmp_path):
    assert tuab_label("edf/train/abnormal/01_tcp_ar/aaaaaaab_s001_t000.edf") == (
        "abnormal",
        "train",
    )
    assert tuab_label("edf/eval/normal/01_tcp_ar/x_s001_t000.edf") == ("normal", "eval")
    assert tuab_label("edf/01_tcp_ar/x_s001_t000.edf") is None
    rec = tmp_path / "a.rec"
    rec.write_text("0,10.0,11.0,6\n1,10.0,11.0,6\n3,20.5,21.5,1\n")  # same event on 2 channels
    got = read_tuev_rec(str(rec))
    assert [(e.onset_s, e.duration_s, e.value) for e in got] == [
        (10.0, 1.0, "bckg"),
        (20.5, 1.0, "spsw"),
    ]
    rec.write_text("0,10.0,11.0,9\n")
    with pytest.raises(LabelError, match="a.rec line 1"):
        read_tuev_rec(str(rec))
    ev = tmp_path / "sub-01_task-x_events.tsv"
    # missing values (n/a, NaN, short rows) drop the row; they are not errors
    ev.write_text("onset\tduration\ttrial_type\n1.5\tn/a\tgo\n2.5\n3.0\t0\tn/a\nNaN\t0\tgo\n")
    assert [(e.onset_s, e.value) for e in read_events_tsv(str(ev))] == [(1.5, "go")]
    for body, needle in (
        ("onset\ttrial_type\n-inf\tgo\n", "not finite"),
        ("onset\ttrial_type\n1e400\tgo\n", "not finite"),
        ("onset\ttrial_type\nsoon\tgo\n", "not a number"),
        ("onset\ttrial_type\n1\tgo\textra\n", "more fields"),
        ("onset\tvalue\n1\tgo\n", "'trial_type'"),
    ):
        ev.write_text(body)
        with pytest.raises(LabelError, match=needle):
            read_events_tsv(str(ev))
    table = tmp_path / "labels.tsv"
    table.write_text("subject\tgroup\nsub-01\tPD\n02\tHC\n")
    assert read_label_table(str(table), "subject", "group") == {"01": "PD", "02": "HC"}
    with pytest.raises(LabelError, match="labels.tsv.*'diagnosis'"):
        read_label_table(str(table), "subject", "diagnosis")


def test_tuab_and_tuev_trees_end_to_end(tmp_path):
    """A tiny TUH tree of links to the real EDF: TUAB labels and official split from the
    folders; a TUEV .rec beside a file; a broken .rec is a 'failed' outcome, not a crash."""
    edf = meeg_file(EDF)
    root = tmp_path / "tuab"
    for split, label, subj, ses in (
        ("train", "normal", "aaaaaaaa", 1),
        ("eval", "abnormal", "aaaaaaab", 1),
        ("eval", "abnormal", "aaaaaaaa", 2),  # a subject on both sides: one side is refused
        ("train", "abnormal", "aaaaaaae", 1),
        ("train", "normal", "aaaaaaaf", 1),
    ):
        d = root / "edf" / split / label / "01_tcp_ar"
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(edf, d / f"{subj}_s{ses:03d}_t000.edf")
    tuab = recipe_from_dict(
        {
            "name": "tuab-mini",
            "classes": ["normal", "abnormal"],
            "labels": "tuab",
            "window_s": 10.0,
            "split": "official",
            "line_freq": 60.0,
        }
    )
    ls = build_labelled_set(tuab, str(root), work_dir=str(tmp_path / "w1"))
    split = ls.meta["official_split"]
    assert split["tuab-mini/aaaaaaab"] == "eval" and set(split) == {
        "tuab-mini/aaaaaaaa",
        "tuab-mini/aaaaaaab",
        "tuab-mini/aaaaaaae",
        "tuab-mini/aaaaaaaf",
    }
    # the fine-tuning folds read the same key: every fold tests on the official eval subject,
    # the train subjects rotate through validation, no subject in two parts
    folds = folds_for(ls, k=2, seed=42)
    evals = tuple(s for s, v in sorted(split.items()) if v == "eval")
    assert "tuab-mini/aaaaaaab" in evals and [f.test for f in folds] == [evals] * 2
    assert sorted(v for f in folds for v in f.val) == [
        s for s, v in sorted(split.items()) if v == "train"
    ]
    (conflict,) = [e for e in ls.meta["recordings"] if e.get("error_class") == "SplitConflict"]
    assert conflict["subject"] == "aaaaaaaa" and ls.meta["split_conflicts"] == [
        "tuab-mini/aaaaaaaa"
    ]
    a_label = {"train": 0, "eval": 1}[split["tuab-mini/aaaaaaaa"]]  # normal in train, else abnormal
    per_subject = {s: {w.label for w in ls.windows if w.subject == s} for s in set(ls.subjects)}
    assert per_subject == {
        "tuab-mini/aaaaaaaa": {a_label},
        "tuab-mini/aaaaaaab": {1},
        "tuab-mini/aaaaaaae": {1},
        "tuab-mini/aaaaaaaf": {0},
    }
    assert len(ls) == 4 * 12  # 124 s -> 12 windows of 10 s each
    tuev_root = tmp_path / "tuev"
    d = tuev_root / "edf" / "train" / "aaaaaaac"
    d.mkdir(parents=True)
    os.symlink(edf, d / "aaaaaaac_00000001.edf")
    d2 = tuev_root / "edf" / "eval" / "aaaaaaad"
    d2.mkdir(parents=True)
    os.symlink(edf, d2 / "aaaaaaad_00000001.edf")
    (d / "aaaaaaac_00000001.rec").write_text("0,30.0,31.0,4\n2,30.0,31.0,4\n5,60.0,61.0,6\n")
    (d2 / "aaaaaaad_00000001.rec").write_text("garbage\n")
    tuev = recipe_from_dict(
        {
            "name": "tuev-mini",
            "classes": ["spsw", "gped", "pled", "eyem", "artf", "bckg"],
            "labels": "tuev",
            "window_s": 5.0,
            "tmin_s": -2.0,
            "split": "official",
        }
    )
    ls = build_labelled_set(tuev, str(tuev_root), work_dir=str(tmp_path / "w2"))
    got = sorted((round(w.onset_s, 3), ls.classes[w.label]) for w in ls.windows)
    assert got == [(28.0, "eyem"), (58.0, "bckg")]
    outcomes = {e["outcome"]: e for e in ls.meta["recordings"]}
    assert outcomes["failed"]["error_class"] == "BadLabels"
    assert "aaaaaaad_00000001.rec" in outcomes["failed"]["reason"]
    assert all(w.subject for w in ls.windows)


def test_unusable_recordings_end_in_the_ledger(tmp_path):
    """No subject id, no events.tsv, an unreadable file: recorded outcomes, never a crash."""
    from brainomni.records import RecordingRef

    edf = str(meeg_file(EDF))
    bogus = tmp_path / "sub-09_task-x_eeg.edf"
    bogus.write_bytes(b"not an EDF at all" * 10)
    (tmp_path / "sub-09_task-x_events.tsv").write_text("onset\tduration\ttrial_type\n1.0\t0\tT1\n")
    recipe = recipe_from_dict({**EDF_RECIPE, "name": "ledger", "event_source": "bids"})
    ls = build_labelled_set(
        recipe,
        [RecordingRef(uri=edf, dataset="d", relpath="a.edf", subject=""), edf, str(bogus)],
        work_dir=str(tmp_path / "w"),
    )
    assert len(ls) == 0
    why = {e["error_class"]: e["outcome"] for e in ls.meta["recordings"]}
    assert why["NoSubject"] == "skipped" and why["NoEvents"] == "skipped"
    assert set(why) == {"NoSubject", "NoEvents", next(k for k in why if why[k] == "failed")}
    assert ls.meta["outcomes"] == {"skipped": 2, "failed": 1}


def test_store_time_axis_starts_at_the_first_sample(edf_set):
    """Event onsets map to store samples as onset * 256 only if the cleaned store has no
    delay: cross-correlate one channel of the store with MNE's own resampling of the raw
    file (average-referenced, band-limited the same way); the best lag is 0 (±1 sample)."""
    import zarr

    _, ls, path, work = edf_set
    rid = ls.windows[0].recording_id
    g = zarr.open_group(os.path.join(work, "recordings", "edf-mi", f"{rid}.zarr"), mode="r")
    names = list(g.attrs["ch_names"])
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.pick(names)
    raw.set_eeg_reference("average", verbose="error")
    raw.resample(SF, verbose="error")
    raw.filter(1.0, 30.0, verbose="error")
    row = names.index(next(n for n in names if n.rstrip(".").lower() == "cz"))
    ref = raw.get_data()[row]
    sig = mne.filter.filter_data(
        np.asarray(g["signal"][row], dtype=np.float64), SF, 1.0, 30.0, verbose="error"
    )
    n = min(len(ref), len(sig)) - 512
    seg = slice(256, 256 + n)
    lags = range(-8, 9)
    cc = [np.dot(ref[seg], sig[256 + k : 256 + k + n]) for k in lags]
    assert abs(list(lags)[int(np.argmax(cc))]) <= 1


def test_physionet_mi_labels_depend_on_the_run(tmp_path, monkeypatch):
    """The shipped PhysioNet-MI recipe: T1/T2 are left/right fist in run 4, both fists/feet
    in run 6; T0 (rest) is no class; a run without a map is skipped. The store cleaned for
    the first build is reused by the next ones (same recording, checksum, config)."""
    from brainomni.evaluation.recipes import get_recipe
    from brainomni.records import RecordingRef

    edf = str(meeg_file(EDF))
    recipe = get_recipe("PhysioNet-MI")
    raw = mne.io.read_raw_edf(edf, verbose="error")
    n_t = {d: int(np.sum(raw.annotations.description == d)) for d in ("T1", "T2")}
    got = {}
    for run in ("4", "6", "3"):
        ref = RecordingRef(
            uri=edf, dataset="eegmmidb", relpath="S001R.edf", subject="S001", run=run
        )
        ls = build_labelled_set(recipe, [ref], work_dir=str(tmp_path))
        got[run] = ls.counts()

        def no_cleaning(*a, **k):
            raise AssertionError("the store should have been reused")

        monkeypatch.setattr("brainomni.clean.preprocess_recording", no_cleaning)
    assert got["4"] == {"left_fist": n_t["T1"], "right_fist": n_t["T2"], "both_fists": 0, "feet": 0}
    assert got["6"] == {"left_fist": 0, "right_fist": 0, "both_fists": n_t["T1"], "feet": n_t["T2"]}
    assert sum(got["3"].values()) == 0
