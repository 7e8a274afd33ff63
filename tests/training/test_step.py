"""``train_step`` (the loop's optimizer step, reused by the benchmarks) and the loop with a
model other than MCGF: whatever meets the trainable contract trains, and its log follows
the terms it returns."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from mcgf.errors import UserError
from mcgf.training.config import parse_run_config
from mcgf.training.loop import train
from mcgf.training.step import Objective, StepResult, train_step
from tests.training.tiny_run import tiny_config, write_tree
from tests.training.toy_model import TOY, ToyNet, toy_batch
from tests.training.toy_model import toy_registered as toy_registered

CPU = torch.device("cpu")


def _opt(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1)


def test_encoder_gradient_norms_use_the_models_own_weights() -> None:
    norms = {}
    for aux in (0.5, 1.0):
        torch.manual_seed(0)
        model = ToyNet(aux=aux)
        res = train_step(Objective(model), _opt(model), None, toy_batch(), grad_norms=True)
        norms[aux] = res.grad_norms
    assert set(norms[0.5]) == {"grad_encoder_ce", "grad_encoder_aux"}
    assert norms[0.5]["grad_encoder_ce"] == pytest.approx(norms[1.0]["grad_encoder_ce"])
    assert norms[0.5]["grad_encoder_aux"] == pytest.approx(0.5 * norms[1.0]["grad_encoder_aux"])
    assert norms[1.0]["grad_encoder_aux"] > 0


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_loss_scaler_steps_exactly_like_none_and_skips_overflows() -> None:
    """fp16 training's scaler: backward on the loss times a power of two, unscaled before
    clipping (the clip sees true gradients), so the step equals the unscaled one bit for
    bit; gradients that overflow skip the step and halve the scale."""
    weights = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        torch.manual_seed(0)
        model = ToyNet()
        train_step(Objective(model), _opt(model), None, toy_batch(), grad_clip=0.05, scaler=scaler)
        weights.append(_flat(model))
    assert torch.equal(weights[0], weights[1])
    torch.manual_seed(0)
    model = ToyNet(aux=1e36)  # a finite loss whose scaled gradients overflow
    before = _flat(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    train_step(Objective(model), _opt(model), None, toy_batch(), scaler=scaler)
    assert torch.equal(_flat(model), before) and scaler.get_scale() == 2.0**15


def test_accumulated_micro_batches_step_like_their_union() -> None:
    """Two halves accumulated = one step on the whole batch (the toy has no batch statistics)."""
    batch = toy_batch(8)
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    weights = []
    for micro in (batch, halves):
        torch.manual_seed(0)
        model = ToyNet()
        opt = _opt(model)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
        res = train_step(Objective(model), opt, sched, micro, grad_clip=10.0)
        assert isinstance(res, StepResult) and res.lr == 0.1 and res.images == 16
        assert opt.param_groups[0]["lr"] == 0.05  # the scheduler stepped once
        assert all(p.grad is None for p in model.parameters())  # zeroed after the step
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert len(res.terms) == (1 if micro is batch else 2)
    torch.testing.assert_close(weights[0], weights[1], atol=1e-6, rtol=1e-5)
    res = StepResult([{"ce": 1.0, "restore": 4.0}, {"ce": 3.0}], 0.1, 8)
    assert res.mean_terms() == {"ce": 2.0, "restore": 4.0}


def test_a_non_finite_loss_takes_no_step() -> None:
    model = ToyNet()
    before = [p.detach().clone() for p in model.parameters()]
    batch = toy_batch()
    batch["drone"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss term"):
        train_step(Objective(model), _opt(model), None, batch)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(("returned", "message"), [
    (lambda t: {"ce": t["ce"]}, r"returned no 'total' term \(it returned ce\)"),
    (lambda t: {**t, "total": t["total"].expand(3)},
     r"returned term 'total' of shape \(3,\), not a scalar tensor"),
    (lambda t: {**t, "acc": 0.5}, r"returned term 'acc' as float, not a tensor"),
    (lambda t: t["total"], r"returned Tensor, not a dict of loss terms"),
    (lambda t: {**t, "lr": t["total"]}, r"returned term 'lr', a name log.csv keeps for its own "
                                         r"column: rename the term"),
    (lambda t: {**t, "val_acc": t["total"]}, r"returned term 'val_acc', a name log.csv keeps for its own column: rename the term"),
])
def test_a_loss_outside_the_contract_is_refused_in_one_line(returned: Any, message: str) -> None:
    """A model's ``loss`` that the step cannot use stops it with a user error naming the
    model and the term, before any backward pass or optimizer step."""
    model = ToyNet()
    plain = model.loss
    model.loss = lambda batch, generator=None: returned(plain(batch))  # type: ignore[method-assign]
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UserError, match=rf"^ToyNet.loss {message} \(see mcgf.models.base"):
        train_step(Objective(model), _opt(model), None, toy_batch())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_loss_terms_are_read_back_once_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read of a GPU value waits for the GPU: the terms of all accumulated
    micro-batches come back in one read, and equal the per-batch values."""
    batch = toy_batch(8)
    quarters = [{k: v[i:i + 2] for k, v in batch.items()} for i in range(0, 8, 2)]
    torch.manual_seed(0)
    model = ToyNet()
    expected = [{k: float(v.detach()) for k, v in Objective(model)(q).items()} for q in quarters]
    reads = []
    real = torch.Tensor.tolist

    def counting(self: torch.Tensor) -> object:
        reads.append(tuple(self.shape))
        return real(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    res = train_step(Objective(model), _opt(model), None, quarters)
    assert reads == [(4 * len(expected[0]),)]
    assert len(res.terms) == 4
    for got, want in zip(res.terms, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-6)


def test_ranks_with_different_terms_reduce_vectors_of_one_length(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank whose micro-batch had no weathered image has no restoration term; it must
    still send a vector as long as the other ranks' (or the collective hangs), and each
    term is averaged over the ranks that had it."""
    import torch.distributed as dist

    from mcgf.training.step import mean_over_ranks

    other = {"ce": torch.tensor(3.0), "restore": torch.tensor(0.5), "total": torch.tensor(3.5)}
    names = ["ce", "consistency", "restore"]
    sent = []

    def all_reduce(t: torch.Tensor) -> None:  # this rank + one rank that had every term
        sent.append(t.shape)
        keys = sorted(set(names) | set(other) | {"total"})
        t += torch.tensor([[float(other.get(k, 0.0)) for k in keys]
                           + [float(k in other) for k in keys]])

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    mine = {"ce": torch.tensor(1.0), "total": torch.tensor(1.0)}
    out = mean_over_ranks([mine], 2, names)
    assert sent == [torch.Size([1, 8])]
    assert out == [{"ce": 2.0, "restore": 0.5, "total": 2.25}]


def _toy_config(root: Path, **model: object) -> dict:
    cfg = tiny_config(root, epochs=2)
    cfg["model"] = {"name": TOY, **model}
    return cfg


def test_the_loop_trains_any_contract_model_and_logs_its_terms(
        tmp_path: Path, toy_registered: str) -> None:
    root = write_tree(tmp_path / "U")
    out = tmp_path / "run"
    result = train(parse_run_config(_toy_config(root, aux=0.25), "t"), out, progress=False)
    assert set(result.final_losses) == {"ce", "aux", "total"} and result.steps == 4
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == ("step", "epoch", "lr", "aux", "ce", "total", "images_per_s",
                              "grad_encoder_ce", "grad_encoder_aux")
    assert all(float(r["grad_encoder_aux"]) > 0 for r in rows)
    from mcgf.training import load_checkpoint

    ck = load_checkpoint(out / "last")
    assert isinstance(ck.model, ToyNet) and ck.model.aux == 0.25
    assert ck.config["model"] == {"name": TOY, "aux": 0.25, "num_classes": 4}


def test_the_loop_names_trainable_parameters_no_group_holds(
        tmp_path: Path, toy_registered: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A model whose param_groups() leave out its classifier trains only its encoder: the
    run says so before the first step, naming the parameters left out."""
    monkeypatch.setattr(ToyNet, "param_groups", lambda self, lr, wd, ld=None:
                        [{"params": list(self.encoder.parameters()), "lr": lr}])
    cfg = parse_run_config(_toy_config(write_tree(tmp_path / "U")), "t")
    with caplog.at_level("WARNING", logger="mcgf"):
        train(cfg, tmp_path / "run", progress=False, stop_after=1)
    left = [r.getMessage() for r in caplog.records if "none of its param_groups" in r.getMessage()]
    assert left == [f"model {TOY!r}: 2 trainable parameters are in none of its param_groups() "
                    "and will not train (classifier.weight, classifier.bias): add them to a "
                    "group, or set requires_grad=False"]


class PairNet(ToyNet):
    """A contrastive model without a classifier over locations: no ``num_classes`` option."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(num_classes=1, width=width, aux=0.0)

    def loss(self, batch: dict, *, generator: torch.Generator | None = None) -> dict:
        d = torch.nn.functional.normalize(self.encoder(batch["drone"]), dim=1)
        s = torch.nn.functional.normalize(self.encoder(batch["satellite"]), dim=1)
        same = (batch["drone_label"][:, None] == batch["satellite_label"][None, :]).float()
        nce = -(same / same.sum(1, keepdim=True) * (10 * d @ s.T).log_softmax(1)).sum(1).mean()
        return {"infonce": nce, "total": nce}


def test_a_model_without_num_classes_trains_and_resumes(tmp_path: Path) -> None:
    """``model.num_classes`` is filled in from the data only for a model that takes it."""
    from mcgf.models import model_registry
    from mcgf.training import load_checkpoint

    model_registry.register_model("toy-pairs")(PairNet)
    try:
        cfg = _toy_config(write_tree(tmp_path / "U"), width=3)
        cfg["model"]["name"] = "toy-pairs"
        out = tmp_path / "run"
        train(parse_run_config(cfg, "t"), out, progress=False, stop_after=1)
        result = train(parse_run_config(cfg, "t"), out, progress=False, resume=True)
        assert result.epochs == 2 and set(result.final_losses) == {"infonce", "total"}
        ck = load_checkpoint(out / "last")
        assert isinstance(ck.model, PairNet)
        assert ck.config["model"] == {"name": "toy-pairs", "width": 3}
    finally:
        model_registry._MODELS._factories.pop("toy-pairs", None)


def test_a_model_without_the_contract_is_refused_by_name(tmp_path: Path) -> None:
    from mcgf.models import model_registry

    @model_registry.register_model("toy-viewer")
    class Viewer(torch.nn.Module):
        def __init__(self, num_classes: int = 1) -> None:
            super().__init__()
            self.input_size = (16, 16)

    try:
        cfg = tiny_config(write_tree(tmp_path / "U"))
        cfg["model"] = {"name": "toy-viewer"}
        with pytest.raises(UserError, match=r"model 'toy-viewer' \(Viewer\) cannot be trained: "
                                            r"it lacks mean, std, needs_clean_targets"):
            train(parse_run_config(cfg, "t"), tmp_path / "run", progress=False)
    finally:
        model_registry._MODELS._factories.pop("toy-viewer", None)


def test_a_step_clamps_the_logit_scale_parameter_itself() -> None:
    """CLIP's way: the parameter goes back into range after the step, so a gradient can bring
    it down again (a clamp in the forward pass alone leaves it stuck above, gradient-free)."""
    import math

    from mcgf.models.losses import InfoNCE

    torch.manual_seed(0)
    model = ToyNet()
    model.nce = InfoNCE(max_scale=100.0)
    with torch.no_grad():
        model.nce.log_scale.fill_(math.log(100.0) + 1.0)
    train_step(Objective(model), _opt(model), None, toy_batch())
    assert model.nce.log_scale.item() == pytest.approx(math.log(100.0))
    assert model.nce.scale.item() == pytest.approx(100.0)
