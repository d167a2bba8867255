"""Make the example data files in this folder from data that ships with installed packages (no download).

    python examples/data/make_tables.py          # rewrites diabetes.csv and eeg.csv next to this script

``diabetes.csv`` (442 rows): scikit-learn's diabetes data in its original units (Efron et al. 2004, "Least
Angle Regression"), with the columns named as scikit-learn's description names them, to predict
``progression``, a measure of disease progression one year after baseline. Two categorical columns make it a
mixed table: ``sex`` (the source's coding 1 / 2, written as ``sex_1`` / ``sex_2``: the source does not say
which is which) and ``bmi_class``, the WHO body-mass-index class (underweight < 18.5 <= normal < 25 <=
overweight < 30 <= obese). The source has no missing values, so some are made: about 8% of ``bmi`` (and with
it ``bmi_class``), ``bp`` and ``hdl``, and 4% of ``sex``, erased completely at random with a seeded generator,
as an example of the imputation tunelab fits on the training rows.

``eeg.csv`` (800 rows): the 4-channel EEG recording matplotlib ships as sample data (``eeg.dat``, used by its
"MRI with EEG" gallery example): 800 samples per channel over 10 seconds (80 Hz), in the recording's units.
``t`` is the time in seconds.

The output is deterministic: the test suite runs this script and compares its output with the files here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SEED = 0

# scikit-learn's description of the diabetes data names its six blood serum measurements s1..s6 like this.
_SERUM_NAMES = {"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glu"}
_MISSING_SHARE = {"bmi": 0.08, "bp": 0.08, "hdl": 0.08, "sex": 0.04}


def diabetes_table(*, seed: int = SEED) -> pd.DataFrame:
    """The mixed table described in the module docstring: 442 rows, 12 columns."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False, as_frame=True)
    frame = bunch.frame.rename(columns={**_SERUM_NAMES, "target": "progression"})
    frame["sex"] = "sex_" + frame["sex"].round().astype(int).astype(str)
    bins = [-np.inf, 18.5, 25.0, 30.0, np.inf]
    labels = ["underweight", "normal", "overweight", "obese"]
    frame.insert(3, "bmi_class", pd.cut(frame["bmi"], bins, labels=labels, right=False).astype(str))
    rng = np.random.default_rng(seed)
    for column, share in _MISSING_SHARE.items():
        erased = rng.random(len(frame)) < share
        frame.loc[erased, column] = np.nan
        if column == "bmi":
            frame.loc[erased, "bmi_class"] = np.nan  # a class of an unmeasured BMI is unknown too
    return frame


def eeg_series() -> pd.DataFrame:
    """matplotlib's sample EEG recording: ``t`` (seconds) and channels ``ch1`` .. ``ch4``, 800 rows."""
    from matplotlib import cbook

    n_samples, n_channels = 800, 4  # the layout matplotlib's own example reads the file with
    with cbook.get_sample_data("eeg.dat") as handle:
        values = np.fromfile(handle, dtype=np.float64).reshape(n_samples, n_channels)
    frame = pd.DataFrame(values, columns=[f"ch{k + 1}" for k in range(n_channels)])
    frame.insert(0, "t", np.arange(n_samples) / 80.0)
    return frame


def write_all(out_dir: Path) -> list[Path]:
    """Write both files to ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "diabetes.csv", out_dir / "eeg.csv"]
    diabetes_table().to_csv(paths[0], index=False, float_format="%.6g")
    eeg_series().to_csv(paths[1], index=False, float_format="%.6g")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this one)")
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
