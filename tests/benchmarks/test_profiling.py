"""``benchmarks/_profiling.py`` with a model that has no ``num_classes`` option (no
classifier over locations): the head size is not passed, the random batches still have labels."""

from __future__ import annotations

from pathlib import Path

import torch

from mcgf.models import model_registry
from mcgf.training.config import parse_run_config
from tests.benchmarks.conftest import load_script  # noqa: F401  (puts benchmarks/ on the path)
from tests.training.test_step import PairNet, _toy_config
from tests.training.tiny_run import write_tree


def test_a_model_without_num_classes_is_built_counted_and_stepped(tmp_path: Path) -> None:
    import _profiling as prof

    model_registry.register_model("toy-pairs")(PairNet)
    try:
        cfg = _toy_config(write_tree(tmp_path / "U"), width=3)
        cfg["model"]["name"] = "toy-pairs"
        cfg = parse_run_config(cfg, "t")
        classes = prof.num_classes(cfg)
        assert classes == prof.LABELS_WITHOUT_HEAD
        assert "num_classes" not in prof.model_options(cfg.model, classes)
        model = prof.build_model(cfg, torch.device("cpu"))
        assert isinstance(model, PairNet)
        shape = prof.BatchShape(2, 1)
        _, flops = prof.model_flops(cfg, classes, shape=shape)
        assert flops.train_step > 0
        batch = prof.random_batch(shape, model.input_size, classes, clean=False,
                                  device=torch.device("cpu"))
        assert torch.isfinite(model.loss(batch)["total"])
    finally:
        model_registry._MODELS._factories.pop("toy-pairs", None)
