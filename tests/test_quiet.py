"""`medseg demo` and `medseg fit` print progress and results, not warnings a user cannot act on.

Each silenced message is checked where it comes from (fast), and once end to end through `medseg demo` in a
fresh process (slow), whose whole stdout+stderr is read as a user would see it.
"""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY_NET
from pytorch_lightning.loggers import WandbLogger

from medseg.cli import MedsegCLI, _quiet_third_party

ROOT = Path(__file__).resolve().parents[1]
SILENCED = [
    "LightningCLI's args parameter is intended",
    "litlogger",
    "The anonymous setting has no effect",
    "does not exist",  # wandb: "git root <run dir> does not exist"
    "LeafSpec",
    "across ranks is zero",
]


def test_lightning_pytree_deprecation_is_filtered_by_module_only():
    from pytorch_lightning.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_third_party()
        _tree_flatten({"loss": 1.0})  # Lightning builds a torch LeafSpec, which torch deprecated
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated (from elsewhere)", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert messages == ["`isinstance(treespec, LeafSpec)` is deprecated (from elsewhere)"], messages


def test_the_empty_validation_loader_note_is_filtered_other_lengths_warn():
    import torch
    from pytorch_lightning.utilities.data import has_len_all_ranks

    strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=lambda t, reduce_op: t)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_third_party()
        has_len_all_ranks([], strategy)  # no case held out: medseg's datamodules hand Lightning []
        warnings.warn("Total length of `list` across ranks is zero (from elsewhere)", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["Total length of `list` across ranks is zero (from elsewhere)"]


def test_litlogger_tip_is_dropped_other_lightning_info_kept():
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    log.addHandler(handler)
    try:
        _quiet_third_party()
        _quiet_third_party()  # idempotent: one filter
        rank_zero_info("💡 Tip: ... try installing [litlogger](https://pypi.org/project/litlogger/) ...")
        rank_zero_info("GPU available: False, used: False")
    finally:
        log.removeHandler(handler)
    assert records == ["GPU available: False, used: False"]
    assert sum(type(f).__name__ == "_DropLitLoggerTip" for f in log.filters) == 1


def test_wandb_run_folder_made_and_anonymous_dropped_before_the_run(tmp_path):
    save_dir = tmp_path / "run"
    logger = WandbLogger(save_dir=str(save_dir), offline=True)  # no wandb run yet: that starts at .experiment
    MedsegCLI._prepare_logger(SimpleNamespace(trainer=SimpleNamespace(logger=logger)))
    assert save_dir.is_dir()  # wandb looks for a git repository from here: no "git root ... does not exist"
    assert "anonymous" not in logger._wandb_init  # wandb warns for any value, None included


def test_args_with_a_command_line_does_not_warn(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["medseg", "demo", "--out", str(tmp_path)])  # as `medseg demo` runs fit
    args = [
        "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"), *TINY_NET,
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MedsegCLI(args=args, run=False)  # run=False: no subcommand, parse and instantiate only
    assert not [str(w.message) for w in caught if "args parameter" in str(w.message)]


CT_NET = [*TINY_NET[:3], "1", TINY_NET[4], "6", *TINY_NET[6:]]  # one CT channel in; background + 5 organs out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mri", "ct"])
def test_demo_prints_results_not_noise(tmp_path, kind):
    env = {**os.environ, "WANDB_SILENT": "false", "WANDB_MODE": "offline", "PYTHONWARNINGS": ""}
    out = tmp_path / "demo"
    command = [
        sys.executable, "-m", "medseg.cli", "demo", "--kind", kind, "--out", str(out), "--cases", "2",
        "--test-cases", "1", "--max-steps", "2", "--",
        *(TINY_NET if kind == "mri" else CT_NET),
        "--data.init_args.roi_size", "[32, 32, 32]", "--model.init_args.roi_size", "[32, 32, 32]",
        "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "Tracking run with wandb" in text  # the wandb logger ran (its warnings were not merely silent)
    if kind == "mri":
        assert "region  Dice mean" in text and "WT" in done.stdout
    else:  # planned, trained from the plan, scored by organ name
        assert "wrote " in text and "plan.yaml" in text and "class " in done.stdout and "kidney_left" in done.stdout
    for message in SILENCED:
        assert message not in text, f"{message!r} in:\n{text}"
    assert "wandb: WARNING" not in text, text
    page = Path(done.stdout.strip().splitlines()[-1].split(": ", 1)[1])  # the demo ends with its review page
    assert page.name == "index.html" and (page.parent / "cases").is_dir() and (page.parent / "niivue.umd.js").is_file()
    assert (page.parent / "training_curves.png").is_file()  # the curves of the run's own wandb log
