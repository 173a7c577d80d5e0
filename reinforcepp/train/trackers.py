"""Where the metrics log mirrors its scalars and sample tables: TensorBoard, Weights & Biases, Trackio.

Each tracker's package is imported here, only when the config asks for it (wandb and trackio are optional
extras); :func:`require_trackers` checks them before any model loads, so a missing one costs no waiting."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from reinforcepp.config import Config, ConfigError

# log.<field> -> (package, pip extra)
OPTIONAL = {"wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio")}
SAMPLES_KEY = "samples"


def import_tracker(field: str) -> ModuleType:
    """The package of ``log.<field>``, or a ConfigError naming the extra to install."""
    package, extra = OPTIONAL[field]
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(f"log.{field}: needs the {package} package ({exc}): pip install "
                          f"'reinforcepp[{extra}]'") from None


def require_trackers(cfg: Config) -> None:
    """Every tracker the config asks for can be imported."""
    for field in OPTIONAL:
        if getattr(cfg.log, field):
            import_tracker(field)


class TensorBoardTracker:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # imported at the edge: it is slow

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_samples(self, step: int, rows: list[dict]) -> None:
        from .samples import markdown_table

        self.writer.add_text(SAMPLES_KEY, markdown_table(rows), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class ModuleTracker:
    """wandb and trackio share one API (trackio copies wandb's): init(project, name, config), log(dict, step),
    Table(columns, data), finish()."""

    def __init__(self, module: ModuleType, *, project: str, name: str, config: dict, **init_kwargs):
        self.module = module
        module.init(project=project, name=name, config=config, **init_kwargs)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.module.log(dict(scalars), step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        from .samples import COLUMNS

        table = self.module.Table(columns=list(COLUMNS), data=[[row[c] for c in COLUMNS] for row in rows])
        self.module.log({SAMPLES_KEY: table}, step=step)

    def close(self) -> None:
        self.module.finish()


def build_trackers(cfg: Config, run_dir: Path) -> list:
    """The optional trackers ``cfg.log`` asks for (rank 0 only: the caller is the metrics log, which adds
    TensorBoard itself)."""
    trackers: list = []
    common = dict(project=cfg.log.project, name=cfg.log.run_name or Path(cfg.output_dir).resolve().name,
                  config=cfg.model_dump(mode="json"))
    if cfg.log.wandb:
        trackers.append(ModuleTracker(import_tracker("wandb"), dir=str(run_dir), **common))
    if cfg.log.trackio:
        trackers.append(ModuleTracker(import_tracker("trackio"), **common))
    return trackers
