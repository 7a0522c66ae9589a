"""Downstream recipes: the shipped file loads, every key is validated, errors name the recipe."""

from __future__ import annotations

import pytest

from brainomni.evaluation.recipes import load_recipes, recipe_from_dict

PAPER_SETS = [
    "AD65",
    "MDD",
    "PD31",
    "TUAB",
    "TUEV",
    "FACED",
    "WBCIC_SHU",
    "PhysioNet-MI",
    "ASD74",
    "MEG-MMI",
    "SomatoMotor",
]
BASE = {"name": "x", "classes": ["a", "b"], "labels": "events", "window_s": 2.0}


def test_shipped_recipes_cover_the_paper_sets_and_say_what_is_uncertain():
    recipes = load_recipes()
    assert set(PAPER_SETS) <= set(recipes)
    for r in recipes.values():
        assert r.status in ("checked", "transcribed", "uncertain")
        if r.status == "uncertain":
            assert len(r.uncertain) > 20, r.name
        assert r.window_s * 256 == int(r.window_s * 256)
    assert recipes["TUEV"].classes == ("spsw", "gped", "pled", "eyem", "artf", "bckg")
    assert recipes["TUAB"].split == recipes["TUEV"].split == "official"
    assert (recipes["SomatoMotor"].tmin_s, recipes["SomatoMotor"].window_s) == (-1.0, 2.0)
    # AD65: FTD (F) is not a class; A/C map to AD/HC
    ad = recipes["AD65"]
    assert ad.map_label("A") == ad.classes.index("AD") and ad.map_label("F") is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"windw_s": 2.0}, "unknown keys ['windw_s']"),
        ({"labels": "vibes"}, "labels = 'vibes'"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": "2"}, "wrong type"),
        ({"classes": ["a"]}, "at least two"),
        ({"classes": ["a", "a"]}, "repeat"),
        ({"label_map": {"1": "c"}}, "label_map['1']"),
        ({"label_map": {"1": "a"}}, "receive no label"),
        ({"labels": "tuab"}, "official"),
        ({"labels": "participants"}, "label_column"),
        ({"status": "uncertain"}, "'uncertain' text"),
        ({"montage": "no_such_montage"}, "montage"),
        ({"split": "random"}, "split"),
        ({"folds": 1}, "folds"),
        ({"line_freq": -50}, "line_freq"),
    ],
)
def test_bad_recipes_are_refused_naming_the_recipe(change, needle):
    with pytest.raises(ValueError) as err:
        recipe_from_dict({**BASE, **change}, "downstream.toml recipe #1")
    assert needle in str(err.value)
    assert "'x'" in str(err.value)  # the recipe's name


def test_missing_required_key_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="missing required keys \\['window_s'\\]"):
        recipe_from_dict({k: v for k, v in BASE.items() if k != "window_s"})
    p = tmp_path / "r.toml"
    p.write_text(
        '[[recipe]]\nname = "x"\nclasses = ["a", "b"]\nlabels = "events"\n'
        'window_s = 2.0\n[[recipe]]\nname = "x"\nclasses = ["a", "b"]\n'
        'labels = "events"\nwindow_s = 2.0\n'
    )
    with pytest.raises(ValueError, match="defined twice"):
        load_recipes(p)
    p.write_text("[[recipe]\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_recipes(p)


def test_hash_covers_every_field_and_label_map():
    r = recipe_from_dict({**BASE, "label_map": {"1": "a", "2": "b"}})
    assert r.map_label("2") == 1 and r.map_label("3") is None
    assert recipe_from_dict({**BASE, "label_map": {"1": "a", "2": "b"}}).hash == r.hash
    assert recipe_from_dict({**BASE, "label_map": {"1": "b", "2": "a"}}).hash != r.hash
    assert recipe_from_dict({**BASE, "tmin_s": -1.0}).hash != recipe_from_dict(BASE).hash


def test_label_map_by_run_is_validated():
    by_run = {"4": {"T1": "a", "T2": "b"}}
    r = recipe_from_dict({**BASE, "label_map_by_run": by_run})
    assert (r.map_label("T2", 4), r.map_label("T2", 5), r.map_label("T2")) == (1, None, None)
    for bad, needle in (
        ({"x": {"T1": "a"}}, "run number"),
        ({"4": {"T1": "c"}}, "not one of"),
        ({"4": {"T1": "a"}}, "receive no label"),
    ):
        with pytest.raises(ValueError, match=needle):
            recipe_from_dict({**BASE, "label_map_by_run": bad})
    with pytest.raises(ValueError, match="not both"):
        recipe_from_dict({**BASE, "label_map_by_run": by_run, "label_map": {"T1": "a", "T2": "b"}})
