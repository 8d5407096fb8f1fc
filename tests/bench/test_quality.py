"""bench/quality.py's comparison of retraining with none on stationary streams (issue 20)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parents[2] / "bench"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # quality.py imports `common` as `python bench/X.py` would
    spec = importlib.util.spec_from_file_location("quality", BENCH / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module
    spec.loader.exec_module(module)
    return module


quality = _load()


def still(preset: str, shipped: float, forced: float, none: float) -> object:
    errors = {"shipped": shipped, "forced": forced, "none": none}
    return quality.Still("flip", preset, 3, 0, errors, 0)


def test_a_stationary_run_measures_shipped_forced_and_none_on_the_same_samples() -> None:
    st = quality.stationary_job(("flip", "tree", 10_000, 1500))
    assert (st.name, st.preset, st.started, st.promoted, st.alarms) == ("flip", "tree", 3, 0, 0)
    # No alarm: the shipped challenger policy never retrains, so it is none, sample for sample.
    assert st.errors["shipped"] == st.errors["none"]
    # A forced challenger serves while it leads in its grace: the error moves.
    assert st.errors["forced"] != st.errors["none"]
    assert all(0 < e < 5 for e in st.errors.values())


def test_the_table_gives_the_mean_of_the_per_seed_ratios_and_the_worst_seed() -> None:
    stills = [still("auto", 1.0, 1.1, 1.0), still("auto", 2.1, 2.0, 2.0), still("tree", 0, 0, 0)]
    assert quality.against_none(stills, "shipped") == {
        ("flip", "auto"): [1.0, 1.05],
        ("flip", "tree"): [1.0],  # a classifier that never errs, either way
    }
    assert quality.against_none([still("auto", 0.1, 0, 0)], "shipped") == {
        ("flip", "auto"): [math.inf]
    }
    rows = quality.against_none_table(stills)
    assert "| flip | auto | 2 | 0 | 1.025 [1.050] | 1.050 [1.100] |" in rows
    assert "| flip | tree | 1 | 0 | 1.000 [1.000] | 1.000 [1.000] |" in rows


def test_target_g_holds_the_default_preset_to_1_02_times_none() -> None:
    (line,) = quality.against_none_targets([still("auto", 1.02, 2, 1), still("tree", 2, 2, 1)])
    assert line.startswith("- PASS (g) stationary flip/auto: as shipped ÷ none 1.020")
    (line,) = quality.against_none_targets([still("auto", 1.021, 1, 1)])
    assert line.startswith("- FAIL (g)")
