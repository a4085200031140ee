"""Setting 2 of the talk: class unlearning in ViTs with no retain data, through low-rank adapters (issue 5).

Covers the ViT models, the LoRA plumbing (targets, rank checks, merge), the bounded losses, the no-retain
data access, the external-image loader, bad input (each a one-line UnlearnkitError before any work) and the
report section. The methods' generic contract (defaults, determinism, NaN, ...) is in test_methods_contract.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import unlearnkit as uk
from unlearnkit.data import ArrayDataset, from_torch
from unlearnkit.data.few_shot import load_external_images
from unlearnkit.errors import DataAccessError, UnlearnkitError
from unlearnkit.methods import UnlearnData, create_method
from unlearnkit.methods import bounded_l1 as _bounded_l1  # noqa: F401  (registers)
from unlearnkit.methods import lora_bounded as _lora_bounded  # noqa: F401
from unlearnkit.methods import neggrad_l1 as _neggrad_l1  # noqa: F401
from unlearnkit.methods import neggrad_lora as _neggrad_lora  # noqa: F401
from unlearnkit.methods._lora import (
    anchor_loss,
    attach_lora,
    bounded_forget_loss,
    find_qkv_linears,
    forget_mode,
    lora_targets,
    merge_lora,
    negative_ce,
)
from unlearnkit.models import create_model
from unlearnkit.models import vit as _vit  # noqa: F401  (registers)
from unlearnkit.reports import setting2
from unlearnkit.scenario import ForgetRequest

PIL = pytest.importorskip("PIL.Image")

SETTING2 = ("lora_bounded", "neggrad_l1", "neggrad_lora", "bounded_l1")
LORA_METHODS = ("lora_bounded", "neggrad_lora")
FAST = {"steps": 3}


class _Tripwire(Dataset):
    """A split that must never be read."""

    def __len__(self) -> int:
        raise AssertionError("a withheld split was read")

    def __getitem__(self, i: int) -> Any:
        raise AssertionError("a withheld split was read")


def _vit_digits(seed: int = 0) -> nn.Module:
    """An untrained vit_digits whose head is random (timm's "jax" init zeroes it: every logit would be 0)."""
    torch.manual_seed(seed)
    model = create_model("vit_digits", 10, (1, 8, 8))
    nn.init.normal_(model.head.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def trained_vit(digits_class_scenario) -> nn.Module:
    """vit_digits after 3 epochs on digits (the contract tests' recipe): class 3 is mostly recognised."""
    from unlearnkit.engine import TrainConfig

    torch.manual_seed(0)
    return uk.train("vit_digits", digits_class_scenario, config=TrainConfig(epochs=3), device="cpu")


def _forget_only(scenario: uk.Scenario, k: int = 10, **extra: Any) -> UnlearnData:
    data = UnlearnData.from_scenario(scenario, provide=(), device="cpu")
    data._forget = scenario.few_shot_forget(k)
    for name, value in extra.items():
        setattr(data, name, value)
    return data


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _SeparateQKV(nn.Module):
    """Two attention blocks with separate query/key/value projections (names as in ``names``)."""

    def __init__(self, names: tuple[str, str, str], dim: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(64, dim)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            blk = nn.Module()
            for n in names:
                setattr(blk, n, nn.Linear(dim, dim))
            blk.out = nn.Linear(dim, dim)
            self.blocks.append(blk)
        self.names = names
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.flatten(1)).unsqueeze(1)  # one token
        for blk in self.blocks:
            q, k, v = (getattr(blk, n)(h) for n in self.names)
            att = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
            h = h + blk.out(att @ v)
        return self.head(h[:, 0])


# -- models -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit_tiny_patch16", "vit_small_patch16", "swin_small"])
def test_timm_backbones_build_small_with_random_weights(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 7, (3, 32, 32))
    assert all(k.startswith("net.") for k in model.state_dict())
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert len(find_qkv_linears(model)) == {"vit_tiny_patch16": 12, "vit_small_patch16": 12, "swin_small": 24}[name]


def test_timm_backbone_resizes_and_normalises_inputs() -> None:
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16", 10, (1, 8, 8), img_size=32, normalize=True)
    assert model.img_size == (32, 32) and model.normalize
    with torch.no_grad():
        assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert "mean" not in model.state_dict()  # normalisation constants are not weights


@pytest.mark.parametrize(
    ("name", "in_shape", "kwargs", "match"),
    [
        ("vit_tiny_patch16", (40,), {}, r"needs \(C, H, W\) image inputs"),
        ("vit_small_patch16", (3, 8, 8), {}, r"at least 16x16, got 8x8 \(pass img_size"),
        ("swin_small", (3, 2, 2), {}, r"at least 4x4"),
        ("swin_small", (3, 32, 32), {"img_size": "big"}, r"img_size must be an int"),
        ("swin_small", (3, 32, 32), {"no_such_option": 1}, r"no_such_option"),
        ("vit_digits", (1, 7, 7), {}, r"divisible by patch_size=2"),
        ("vit_digits", (1, 8, 8), {"embed_dim": 30}, r"multiple of num_heads"),
    ],
)
def test_bad_model_options_are_one_line_errors(name: str, in_shape: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(UnlearnkitError, match=match) as err:
        create_model(name, 10, in_shape, **kwargs)
    assert "\n" not in str(err.value)


def test_vit_digits_is_a_timm_vit_with_fused_qkv() -> None:
    from timm.models.vision_transformer import VisionTransformer

    model = _vit_digits()
    assert isinstance(model, VisionTransformer)
    assert find_qkv_linears(model) == [f"blocks.{i}.attn.qkv" for i in range(4)]


@pytest.mark.slow
def test_vit_digits_trains_to_high_accuracy(digits_class_scenario) -> None:
    """The offline benchmark's recipe gives > 0.9 test accuracy (about 0.96; a minute on one core)."""
    from unlearnkit.engine import TrainConfig

    cfg = TrainConfig(epochs=20, lr=1e-3, batch_size=32, optimizer="adamw", weight_decay=0.05)
    model = uk.train("vit_digits", digits_class_scenario, config=cfg, device="cpu")
    assert float(uk.evaluate(model, digits_class_scenario, metrics=["acc_test"], device="cpu")["acc_test"]) > 0.9


# -- LoRA: targets, rank, merge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names", [("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v")], ids=lambda n: n[0]
)
def test_separate_qkv_projections_are_targeted_and_merged(names: tuple[str, str, str]) -> None:
    torch.manual_seed(0)
    model = _SeparateQKV(names)
    targets = find_qkv_linears(model)
    assert targets == [f"blocks.{b}.{n}" for b in range(2) for n in names]  # exactly q/k/v, not out/embed/head
    before = _state(model)
    lora = attach_lora(copy.deepcopy(model), targets, rank=2, alpha=2.0, dropout=0.0,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(lora.adapters()) == 6 and lora.trainable_params == 6 * 2 * (16 + 16)
    merged = merge_lora(lora)
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in before.items()}


def test_lora_starts_at_the_original_and_merges_to_the_same_function() -> None:
    model = _vit_digits()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        y0 = model(x)
    before = _state(model)
    lora = attach_lora(copy.deepcopy(model), find_qkv_linears(model), rank=4, alpha=8.0, dropout=0.0,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    net = lora.peft_model.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), y0, atol=1e-6)  # B = 0: the adapted model is the original
        for _, b in lora.adapters():
            b.normal_(std=0.1)
        y_adapted = net(x)
    assert not torch.allclose(y_adapted, y0, atol=1e-3)
    merged = merge_lora(lora).eval()
    with torch.no_grad():
        assert torch.allclose(merged(x), y_adapted, atol=1e-5)  # W' = W0 + (α/r)·B A
    after = merged.state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape and after[k].dtype == before[k].dtype for k in before)
    assert not any("lora" in n or type(m).__module__.startswith("peft") for n, m in merged.named_modules())
    assert all(p.requires_grad for p in merged.parameters())  # flags restored after peft froze them


def test_forget_mode_keeps_only_lora_dropout_stochastic() -> None:
    model = create_model("vit_digits", 10, (1, 8, 8))
    lora = attach_lora(model, find_qkv_linears(model), rank=2, alpha=2.0, dropout=0.5,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    net = forget_mode(lora.peft_model.train())
    stochastic = [n for n, m in net.named_modules() if isinstance(m, nn.Dropout) and m.training]
    assert len(stochastic) == 4 and all("lora_dropout" in n for n in stochastic)
    assert not any(m.training for n, m in net.named_modules() if "lora" not in n and n)


@pytest.mark.parametrize("name", LORA_METHODS)
def test_lora_methods_return_plain_original_architecture(name: str, digits_class_scenario, trained_vit) -> None:
    model = trained_vit
    out = create_method(name, **FAST).unlearn(model, _forget_only(digits_class_scenario))
    assert type(out) is type(model)
    assert {k: v.shape for k, v in out.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert not any(type(m).__module__.startswith("peft") for m in out.modules())
    assert all(type(out.blocks[i].attn.qkv) is nn.Linear for i in range(4))
    changed = [k for k, v in out.state_dict().items() if not torch.equal(v, model.state_dict()[k])]
    assert changed and all(k.endswith("attn.qkv.weight") for k in changed)  # only the merged Q/K/V weights moved


def test_trainable_fraction_of_lora_vs_full_fine_tuning(digits_class_scenario) -> None:
    model = _vit_digits()
    total = sum(p.numel() for p in model.parameters())
    m = create_method("lora_bounded", **FAST)
    m.unlearn(model, _forget_only(digits_class_scenario))
    assert m.report_["trainable_params"] == 4 * 8 * (64 + 192)  # r·(d_in + d_out) per fused qkv, 4 blocks
    assert m.report_["trainable_fraction"] == pytest.approx(8192 / total) and m.report_["trainable_fraction"] <= 0.05
    full = create_method("neggrad_l1", **FAST)
    full.unlearn(model, _forget_only(digits_class_scenario))
    assert full.report_ == {"trainable_params": total, "trainable_fraction": 1.0}


# -- losses -------------------------------------------------------------------------------------------------------


def _loss_grad(kind: str, margin: float, bound: float = 4.0) -> tuple[float, torch.Tensor]:
    """Loss and its gradient w.r.t. the logits of one sample whose true-class logit is ``margin`` above the rest."""
    logits = torch.zeros(1, 10)
    logits[0, 3] = margin
    logits.requires_grad_(True)
    y = torch.tensor([3])
    loss = negative_ce(logits, y) if kind == "neg" else bounded_forget_loss(logits, y, kind, bound, 0.01)
    loss.backward()
    return loss.item(), logits.grad.clone()


def test_hinge_loss_stops_pushing_once_ce_exceeds_the_bound() -> None:
    ce_of = lambda margin: torch.nn.functional.cross_entropy(  # noqa: E731
        torch.tensor([[0.0] * 3 + [margin] + [0.0] * 6]), torch.tensor([3])
    ).item()
    assert ce_of(-5.0) > 4.0 > ce_of(2.0)
    loss, grad = _loss_grad("hinge", margin=-5.0)  # CE ≈ 7.2 > B = 4: nothing left to push
    assert loss == 0.0 and torch.count_nonzero(grad) == 0
    loss, grad = _loss_grad("hinge", margin=2.0)  # CE < B: pushes the true logit down
    assert loss == pytest.approx(4.0 - ce_of(2.0), rel=1e-5) and grad[0, 3] > 0
    # the hinge on log CE: the same bound, but a confident sample (CE ≈ 0.002) is pushed as hard as CE allows
    loss, grad = _loss_grad("log_hinge", margin=-5.0)
    assert loss == 0.0 and torch.count_nonzero(grad) == 0
    _, g_conf_hinge = _loss_grad("hinge", margin=8.0)
    _, g_conf_log = _loss_grad("log_hinge", margin=8.0)
    assert g_conf_hinge[0, 3] < 0.01 and g_conf_log[0, 3] > 0.5
    # −CE never stops: still a full-size push far beyond any bound
    _, g_neg = _loss_grad("neg", margin=-5.0)
    assert g_neg[0, 3] > 0.9
    # the inverse loss fades as CE grows
    _, g_low = _loss_grad("inverse", margin=2.0)
    _, g_high = _loss_grad("inverse", margin=-5.0)
    assert 0 < g_high[0, 3] < 0.05 * g_low[0, 3]


@pytest.mark.parametrize("kind", ["hinge", "log_hinge"])
def test_hinge_is_per_sample(kind: str) -> None:
    logits = torch.tensor([[0.0] * 3 + [-6.0] + [0.0] * 6, [0.0] * 3 + [6.0] + [0.0] * 6], requires_grad=True)
    bounded_forget_loss(logits, torch.tensor([3, 3]), kind, 4.0, 0.01).backward()
    assert torch.count_nonzero(logits.grad[0]) == 0 and torch.count_nonzero(logits.grad[1]) > 0


def test_anchor_loss_ignores_the_forget_class() -> None:
    z0 = torch.randn(4, 10)
    y = torch.tensor([3, 3, 3, 3])
    z = z0.clone()
    z[:, 3] -= 10.0  # lowering the forgotten class's logit is free
    assert anchor_loss(z, z0, y).item() == 0.0
    z[:, 5] += 1.0  # raising another class is not
    assert anchor_loss(z, z0, y).item() == pytest.approx(1.0 / 9.0)


# -- no retain data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SETTING2)
def test_runs_with_only_k_forget_images_and_never_reads_retain(name: str, digits_class_scenario) -> None:
    data = _forget_only(digits_class_scenario, k=10)
    assert len(data.forget) == 10
    with pytest.raises(DataAccessError, match="retain set is not available"):
        _ = data.retain
    with pytest.raises(DataAccessError):
        _ = data.val
    model = _vit_digits()
    out = create_method(name, **FAST).unlearn(model, data)
    assert out.state_dict().keys() == model.state_dict().keys()
    # and with the other splits present but booby-trapped, the method still never touches them
    trapped = _forget_only(digits_class_scenario, k=10, _retain=_Tripwire(), _val=_Tripwire())
    create_method(name, **FAST).unlearn(model, trapped)


@pytest.mark.parametrize("name", SETTING2)
def test_setting2_declarations(name: str) -> None:
    cls = type(create_method(name))
    assert cls.setting == 2 and cls.needs == frozenset({"forget"}) and cls.requests == frozenset({"class"})
    assert cls.example_model == "vit_digits"


def test_runner_gives_setting2_methods_k_images_and_records_k(tmp_path: Path, digits_class_scenario) -> None:
    from unlearnkit.experiments.config import parse_config
    from unlearnkit.experiments.runner import run_benchmark
    from unlearnkit.experiments.store import ResultsStore

    cfg = parse_config({
        "dataset": "digits", "model": "vit_digits", "forget": ["class:3"], "seeds": [0], "shots": [2, 5],
        "methods": [{"name": "lora_bounded", "params": {"steps": 2}}], "device": "cpu",
        "train": {"epochs": 1, "batch_size": 128}, "metrics": ["acc_forget_test", "acc_retain_test"],
    })  # fmt: skip
    result = run_benchmark(cfg, tmp_path / "out")
    runs = ResultsStore(tmp_path / "out" / "results.db").runs()
    lora = sorted((r for r in runs if r["method"] == "lora_bounded"), key=lambda r: r["params"]["shots"])
    assert result.failed == 0 and [r["params"]["shots"] for r in lora] == [2, 5]
    assert all(r["metrics"]["trainable_fraction"] <= 0.05 for r in lora)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "class unlearning without retain data (setting 2)" in report


# -- bad input: one line, before any work -----------------------------------------------------------------------


def test_k_larger_than_the_forget_set_is_refused(digits_class_scenario) -> None:
    n = len(digits_class_scenario.forget_idx)
    with pytest.raises(UnlearnkitError, match=f"k={n + 1} forget images asked for, but the forget set holds only {n}"):
        digits_class_scenario.few_shot_forget(n + 1)


def _write_images(folder: Path, n: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (*size, 3) if mode == "RGB" else size
        PIL.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(folder / f"img{i}.png")


def test_k_larger_than_the_external_folder_is_refused(tmp_path: Path, digits_class_scenario) -> None:
    _write_images(tmp_path / "threes", 3)
    with pytest.raises(UnlearnkitError, match=r"k=5 forget images asked for, but .* holds only 3"):
        digits_class_scenario.few_shot_forget(5, folder=str(tmp_path / "threes"))
    ds = digits_class_scenario.few_shot_forget(2, folder=str(tmp_path / "threes"))
    assert len(ds) == 2


def test_external_images_match_the_model_input(tmp_path: Path) -> None:
    _write_images(tmp_path / "ext", 2, size=(12, 10), mode="RGB")
    _write_images(tmp_path / "ext_grey", 1, size=(5, 5), mode="L")
    (tmp_path / "ext" / "notes.txt").write_text("not an image")
    grey = load_external_images(tmp_path / "ext", (1, 8, 8), label=3)
    assert grey.x.shape == (2, 1, 8, 8) and grey.x.dtype == torch.float32
    assert 0.0 <= grey.x.min() and grey.x.max() <= 1.0 and grey.y.tolist() == [3, 3]
    rgb = load_external_images(tmp_path / "ext_grey", (3, 32, 16), label=7)
    assert rgb.x.shape == (1, 3, 32, 16) and torch.equal(rgb.x[:, 0], rgb.x[:, 1])  # grey -> equal RGB channels


@pytest.mark.parametrize(
    ("setup", "in_shape", "match"),
    [
        ("ok", (40,), r"need a model taking \(1 or 3, H, W\) images; this one takes in_shape=\(40,\)"),
        ("ok", (1, 40), r"in_shape=\(1, 40\)"),
        ("ok", (4, 8, 8), r"in_shape=\(4, 8, 8\)"),
        ("empty", (1, 8, 8), r"holds no images"),
        ("missing", (1, 8, 8), r"is not a folder"),
        ("garbage", (1, 8, 8), r"cannot read image .*bad\.png"),
    ],
)
def test_bad_external_folders_are_one_line_errors(tmp_path: Path, setup: str, in_shape: tuple, match: str) -> None:
    folder = tmp_path / "ext"
    if setup in ("ok", "garbage"):
        _write_images(folder, 2)
    if setup == "garbage":
        (folder / "bad.png").write_bytes(b"not a png")
    if setup == "empty":
        folder.mkdir()
        (folder / "readme.txt").write_text("no images here")
    with pytest.raises(UnlearnkitError, match=match) as err:
        load_external_images(folder, in_shape, label=0)
    assert "\n" not in str(err.value)


def test_external_folder_for_a_1d_model_is_refused_by_the_scenario(tmp_path: Path) -> None:
    x = torch.rand(40, 40)
    y = torch.arange(40) % 4
    bundle = from_torch(ArrayDataset(x, y), ArrayDataset(x, y))
    assert bundle.in_shape == (40,)
    _write_images(tmp_path / "ext", 3)
    scenario = uk.Scenario(bundle, "class:1", seed=0)
    with pytest.raises(UnlearnkitError, match=r"in_shape=\(40,\)"):
        scenario.few_shot_forget(2, folder=str(tmp_path / "ext"))


def _tripwire_data() -> UnlearnData:
    return UnlearnData(request=ForgetRequest("class", classes=(3,)), num_classes=10, in_shape=(1, 8, 8),
                       _forget=_Tripwire(), forget_classes=(3,))  # fmt: skip


@pytest.mark.parametrize("name", LORA_METHODS)
def test_model_without_attention_is_refused_before_any_work(name: str) -> None:
    mlp = create_model("mlp", 10, (1, 8, 8))
    with pytest.raises(UnlearnkitError, match=r"adapts attention Q/K/V projections, but the model has none") as err:
        create_method(name).unlearn(mlp, _tripwire_data())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", LORA_METHODS)
@pytest.mark.parametrize(("rank", "match"), [
    (0, r"parameter 'rank' must be int in \[1, inf\), got 0"),
    (-3, r"parameter 'rank' must be"),
    (65, r"LoRA rank 65 is larger than layer blocks\.0\.attn\.qkv \(64->192\); it must be at most 64"),
])  # fmt: skip
def test_bad_rank_is_refused_before_any_work(name: str, rank: int, match: str) -> None:
    with pytest.raises(UnlearnkitError, match=match) as err:
        create_method(name, rank=rank).unlearn(_vit_digits(), _tripwire_data())
    assert "\n" not in str(err.value)


def test_lora_targets_checks_rank_per_layer() -> None:
    model = _SeparateQKV(("q_proj", "k_proj", "v_proj"), dim=16)
    assert len(lora_targets(model, 16, "x")) == 6
    with pytest.raises(UnlearnkitError, match="at most 16"):
        lora_targets(model, 17, "x")


# -- report section -----------------------------------------------------------------------------------------------


def _run(method: str, params: dict, seed: int, acc_r: float, acc_f: float, *, dataset: str = "cifar10",
         model: str = "vit_tiny_patch16", forget: str = "class:3", **metrics: float) -> dict:  # fmt: skip
    from unlearnkit.methods import METHODS

    needs = sorted(METHODS.get(method).needs) if method in METHODS else []  # recorded with each run
    return {
        "method": method, "params": params, "seed": seed, "model": model, "status": "ok", "needs": needs,
        "scenario": {"dataset": dataset, "forget": forget, "seed": seed},
        "metrics": {"acc_retain_test": acc_r, "acc_forget_test": acc_f, "time_s": 1.5, **metrics},
    }  # fmt: skip


def test_report_section_lays_out_the_talk_table() -> None:
    runs = [
        _run("original", {}, 0, 0.82, 0.80),
        _run("retrain", {}, 0, 0.81, 0.0),
        _run("neggrad_plus", {"lr": 1e-3}, 0, 0.80, 0.02),
        _run("lora_bounded", {"rank": 8, "shots": 10}, 0, 0.81, 0.0, trainable_fraction=0.013),
        _run("lora_bounded", {"rank": 8, "shots": 10}, 1, 0.83, 0.02, trainable_fraction=0.013),
        _run("lora_bounded", {"rank": 8, "shots": 1}, 0, 0.79, 0.40, trainable_fraction=0.013),
    ]
    section = setting2.setting2_talk_layout(runs)
    assert section is not None and "setting 2" in section.title
    table = section.data["tables"][0]
    rows = {(r["label"], r["k"]): r for r in table["measured"]}
    assert [(r["label"], r["k"]) for r in table["measured"]] == [
        ("original", None),
        ("retrain", None),
        ("neggrad_plus", None),
        ("lora_bounded", 1),
        ("lora_bounded", 10),
    ]
    k10 = rows[("lora_bounded", 10)]
    assert k10["uses_retain"] is False and rows[("neggrad_plus", None)]["uses_retain"] is True
    assert k10["acc_r"]["mean"] == pytest.approx(82.0)
    assert k10["acc_r"]["std"] == pytest.approx(np.std([81, 83], ddof=1))
    assert k10["acc_f"]["mean"] == pytest.approx(1.0) and k10["n_runs"] == 2
    assert "| 82.00 ± 1.41 | 1.00 ± 1.41 | 1.30 ± 0.00 | 1.50 |" in section.markdown
    if table["reference"]:  # the talk's CIFAR-10 ViT-T figures, labelled, never in the measured rows
        ours = next(r for r in table["reference"] if r["method"] == "lora_bounded")
        assert ours["acc_r"] == 81.9 and ours["acc_f"] == 0.1 and "(reference)" in ours["source"]
        assert "talk, CIFAR-10/ViT-T (reference)" in section.markdown
    else:
        assert "reference rows skipped" in table["note"]


def test_report_section_without_reference_dataset_or_setting2_runs() -> None:
    assert setting2.setting2_talk_layout([_run("neggrad_plus", {}, 0, 0.9, 0.0)]) is None
    runs = [_run("lora_bounded", {"shots": 10}, 0, 0.95, 0.0, dataset="digits", model="vit_digits")]
    section = setting2.setting2_talk_layout(runs)
    assert section is not None and section.data["tables"][0]["reference"] == []
    assert "not for digits/vit_digits" in section.markdown or "reference rows skipped" in section.markdown


def test_report_section_says_when_the_reference_file_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(setting2, "load_reference", lambda: (None, "reference rows skipped: file not installed"))
    section = setting2.setting2_talk_layout([_run("lora_bounded", {"shots": 10}, 0, 0.8, 0.0)])
    assert section is not None and "reference rows skipped: file not installed" in section.markdown


def test_unlearnkit_imports_without_timm_or_peft() -> None:
    """timm and peft are imported lazily: without them the package imports; the ViT/LoRA parts say what to install."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['timm'] = None; sys.modules['peft'] = None\n"
        "import torch, unlearnkit as uk\n"
        "from unlearnkit.errors import UnlearnkitError\n"
        "from unlearnkit.methods import UnlearnData, create_method\n"
        "assert 'vit_digits' in uk.list_models() and 'lora_bounded' in uk.list_methods()\n"
        "try:\n    uk.create_model('vit_digits', 10, (1, 8, 8))\nexcept UnlearnkitError as e:\n    print(e)\n"
        "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
        "net.qkv = torch.nn.Linear(16, 16)\n"
        "data = UnlearnData.from_scenario(uk.Scenario(dataset='digits', forget='class:3'), provide=('forget',))\n"
        "try:\n    create_method('lora_bounded').unlearn(net, data)\nexcept UnlearnkitError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "vision-transformer models need timm: pip install 'unlearnkit[vit]'",
        "LoRA methods need peft: pip install 'unlearnkit[vit]'",
    ]
