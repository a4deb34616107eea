"""The ``medseg`` command: LightningCLI for fit/validate/test, plus file-level commands."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from medseg.errors import find_medseg_error

# command -> "module:function"; each function takes argv and returns an exit code
COMMANDS = {
    "demo": ("medseg.commands.demo:main", "generate demo data, fit, predict and evaluate, end to end"),
    "demo-data": ("medseg.commands.demo_data:main", "write synthetic BraTS-style MRI or abdominal CT cases"),
    "plan": ("medseg.commands.plan:main", "measure a dataset and write a training config sized for it"),
    "cv": ("medseg.commands.cv:main", "k-fold cross-validation: a fit per fold, out-of-fold predictions, scores"),
    "predict": ("medseg.commands.predict:main", "segment scans from files with a checkpoint"),
    "calibrate": (
        "medseg.commands.calibrate:main",
        "fit temperatures for a model's probabilities on labelled cases (ECE before/after)",
    ),
    "postprocess": (
        "medseg.commands.postprocess:main",
        "choose post-processing (small components, small ET) on labelled cases; stored with the model",
    ),
    "evaluate": ("medseg.commands.evaluate:main", "Dice and HD95 per region or class of predictions against labels"),
    "report": ("medseg.commands.report:main", "the page of a fit run: training curves and the validation table"),
    "export": (
        "medseg.commands.export:main",
        "export a checkpoint's network to ONNX or TorchScript, checked against PyTorch",
    ),
    "detect": ("medseg.commands.detect:main", "lesion boxes (world mm) from scans with a DETR checkpoint"),
    "zero-shot": ("medseg.commands.zero_shot:main", "classify scans against text prompts with a CLIP checkpoint"),
}
LIGHTNING = {
    "fit": "train a model: medseg fit --config configs/swin_unetr_brats.yaml",
    "validate": "validate a checkpoint: medseg validate --config ... --ckpt_path PATH",
    "test": "test a checkpoint on data.test_dir: medseg test --config ... --ckpt_path PATH",
    "pretrain": "pre-train the Swin encoder on unlabelled scans: medseg pretrain --config configs/pretrain_demo.yaml",
}
HELP = "usage: medseg COMMAND [options]   (medseg COMMAND --help for each)\n\ncommands:\n" + "\n".join(
    f"  {name:<11} {text}" for name, text in [*LIGHTNING.items(), *((n, h) for n, (_, h) in COMMANDS.items())]
)


class _DropLitLoggerTip(logging.Filter):
    """Drops Lightning's advert for its hosted logger (an INFO record, on every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_third_party() -> None:
    """Silence what a medseg user can neither act on nor fix, each by its exact message and source module:
    Lightning's own use of a torch pytree API that torch deprecated, its note on the empty validation loader
    medseg gives it when no case is held out, and Lightning's litlogger advert.
    Warnings about the user's settings (workers, logging interval, existing checkpoints) stay."""
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )
    # medseg's datamodules hand Lightning an empty validation loader exactly when no case is held out
    # (val_fraction 0): the user chose that, and Lightning then skips validation as it should
    warnings.filterwarnings(
        "ignore",
        message=r"Total length of `list` across ranks is zero",
        category=UserWarning,
        module=r"pytorch_lightning\.utilities\.data",
    )
    rank_zero_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropLitLoggerTip())


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves config.yaml beside the run and sends the resolved config to the logger (wandb)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is not None:
            trainer.logger.log_hyperparams({"config": self.config.as_dict()})


class MedsegCLI(LightningCLI):
    """LightningCLI with medseg's defaults: checkpoints in ``<default_root_dir>/checkpoints`` (so
    ``--ckpt_path last`` finds them again), wandb offline unless asked, the resolved config logged."""

    def __init__(
        self,
        args=None,
        run: bool = True,
        model_class: type[LightningModule] = LightningModule,
        datamodule_class: type[LightningDataModule] = LightningDataModule,
    ) -> None:
        _quiet_third_party()
        super().__init__(
            model_class,
            datamodule_class,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"default_root_dir": "runs/default"},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )

    def _finish_logger(self) -> None:
        """Close a wandb run so its offline files are complete (and `wandb sync`-able) when the command ends."""
        experiment = getattr(self.trainer.logger, "experiment", None) if self.trainer.logger else None
        if type(self.trainer.logger).__name__ == "WandbLogger" and hasattr(experiment, "finish"):
            experiment.finish()

    after_fit = after_validate = after_test = _finish_logger

    def _check_data(self) -> None:
        """Read and check the data before the logger starts, so a wrong data path is one error line and
        leaves no empty wandb run behind. Only medseg's datamodules: their ``setup`` remembers what it read and
        checked, so Lightning's own call does not repeat it (another datamodule's would run twice)."""
        from medseg.data.base import CaseDataModule

        if isinstance(self.datamodule, CaseDataModule):
            self.datamodule.setup(self.subcommand)  # fit, validate or test: Lightning's stage names

    def _prepare_logger(self) -> None:
        """Before wandb starts: make its run folder, so wandb does not warn "git root ... does not exist" (it
        looks for a git repository from there; git state is still recorded when the folder is inside one),
        and drop the ``anonymous=None`` that WandbLogger always passes (wandb warns about any value)."""
        logger = self.trainer.logger
        if type(logger).__name__ != "WandbLogger":
            return
        if logger.save_dir:
            os.makedirs(logger.save_dir, exist_ok=True)
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous", False) is None:
            del init["anonymous"]

    def _before_run(self) -> None:
        self._check_data()
        self._prepare_logger()

    before_fit = before_validate = before_test = _before_run

    def parse_arguments(self, parser, args) -> None:
        # medseg always hands LightningCLI the exact arguments of its command (`medseg demo` builds them itself),
        # so Lightning's guard against mixing args with sys.argv only warns about medseg's own command line.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="LightningCLI's args parameter is intended", module=r"pytorch_lightning\.cli"
            )
            super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})  # last.ckpt at every epoch end, for --ckpt_path last
        parser.link_arguments(
            "trainer.default_root_dir", "checkpoint.dirpath", compute_fn=lambda root: os.path.join(root, "checkpoints")
        )


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return 0 if argv else 2
    command = argv[0]
    if command == "predict" and any(a in ("--config", "-c") or a.startswith("--config=") for a in argv):
        print(
            "medseg: error: `medseg predict` needs no config: the checkpoint carries the model and preprocessing.\n"
            "  medseg predict INPUT... --ckpt runs/.../checkpoints/last.ckpt --out DIR   (see medseg predict --help)",
            file=sys.stderr,
        )
        return 2
    if command in COMMANDS:
        module, function = COMMANDS[command][0].split(":")
        return getattr(importlib.import_module(module), function)(argv[1:]) or 0
    if command not in LIGHTNING:
        print(f"medseg: unknown command {command!r}\n\n{HELP}", file=sys.stderr)
        return 2
    os.environ.setdefault("WANDB_MODE", "offline")  # scans are patient data: nothing leaves by default
    if command == "pretrain":  # a fit of the pre-training module on unlabelled data; --help shows its options
        from medseg.data.unlabelled import UnlabelledDataModule
        from medseg.modules.pretrain import PretrainModule

        MedsegCLI(args=["fit", *argv[1:]], model_class=PretrainModule, datamodule_class=UnlabelledDataModule)
        return 0
    MedsegCLI(args=argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _dispatch(argv)
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        error = find_medseg_error(e)
        if error is None and isinstance(e, OSError) and e.filename is not None:
            error = f"{e.filename}: {e.strerror or e}"  # a file the system refused: no traceback needed
        if error is None:
            raise
        print(f"medseg: error: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
