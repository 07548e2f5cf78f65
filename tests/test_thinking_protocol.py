"""The two thinking protocols (harness/evaluation/thinking.py) against a from-scratch
refinement written here: softmax, the energy of model.energy, its autograd gradient and
the step p - alpha dE/dp, with the random draws in the order the protocol defines (start,
then noise before each step), per landscape of the schedule. Plus the trained point
(validation protocol), best-of-N, the task option and the protocol labels of the reports."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ebt_scaling.analysis import figures
from ebt_scaling.analysis.evaluations import plot_thinking, thinking_protocol_sentence
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.spec import spec_from_dict
from ebt_scaling.harness.data.batches import Batch
from ebt_scaling.harness.evaluation.perplexity import score_batches
from ebt_scaling.harness.evaluation.run_evals import format_evaluations, merge_evaluations
from ebt_scaling.harness.evaluation.task_grammar import parse_task
from ebt_scaling.harness.evaluation.thinking import flat_reference, think_task
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX
from ebt_scaling.models.ebt_options import EBTOptions

VOCAB = 64  # a multiple of the vocabulary padding: candidates and their noise are V wide
# float64 models: the from-scratch chains agree to ~1e-12, far below the gap between protocols
SEED = 7


def ebt(**options):
    torch.manual_seed(0)
    options = {"alpha_init": 20.0, **options}  # a moderate step: the chains stay well conditioned
    return build_model(ModelConfig(arch="ebt", n_layers=1, d_model=32, n_heads=2, vocab_size=VOCAB, context=16,
                                   options=EBTOptions(**options))).double().eval()


def batches() -> list[Batch]:
    g = torch.Generator().manual_seed(3)
    out = []
    for rows in (2, 3):
        tokens = torch.randint(0, VOCAB, (rows, 11), generator=g)
        targets = tokens[:, 1:].clone()
        targets[0, 6:] = IGNORE_INDEX
        out.append(Batch(tokens[:, :-1].contiguous(), targets, int((targets != IGNORE_INDEX).sum())))
    return out


def dense_chain(model, inputs, targets, schedule: list[int], sigma: float, samples: int = 1):
    """NLL (B, S) after each step of the schedule, from scratch; with several samples (run
    one after the other) each position keeps the one of lowest final energy."""
    emb = model.tok_emb(inputs)
    alpha = model.alpha.detach().clamp(min=model.config.options.alpha_min)
    kept_nll = kept_energy = None
    for _ in range(samples):
        y = torch.randn(*inputs.shape, VOCAB, dtype=torch.float64)
        nlls = []
        for landscape in schedule:
            kvs = model.real_stream(emb, landscape)
            if sigma > 0:
                y = y + sigma * torch.randn_like(y)
            p = torch.softmax(y, -1).requires_grad_()
            (grad,) = torch.autograd.grad(model.energy(p, kvs).sum(), p)
            y = (p - alpha * grad).detach()
            nlls.append(F.cross_entropy(y.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"))
        with torch.no_grad():
            energy = model.energy(torch.softmax(y, -1), model.real_stream(emb, schedule[-1]))
        if kept_nll is None:
            kept_nll, kept_energy = nlls, energy
        else:
            lower = energy < kept_energy
            kept_nll = [torch.where(lower, new, old) for new, old in zip(nlls, kept_nll)]
            kept_energy = torch.where(lower, energy, kept_energy)
    return kept_nll


def dense_ppl(model, schedule: list[int], sigma: float, samples: int = 1, point: int = -1) -> float:
    """Token-mean perplexity over batches(), batch i under seed SEED + i, after step `point`."""
    total, count = 0.0, 0
    for i, b in enumerate(batches()):
        torch.manual_seed(SEED + i)
        nll = dense_chain(model, b.inputs, b.targets, schedule, sigma, samples)[point]
        mask = b.targets != IGNORE_INDEX
        total += float(nll.double()[mask].sum())
        count += int(mask.sum())
    return math.exp(total / count)


def close(a: float, b: float) -> bool:
    return math.log(a) == pytest.approx(math.log(b), rel=1e-9, abs=1e-9)


def test_paper_protocol_refines_n_steps_on_each_landscape_each_n_its_own_chain():
    model = ebt(refine_steps=3)
    result, _ = think_task(model, batches(), max_steps=5, seed=SEED)  # paper by default
    assert result["protocol"] == "paper" and result["sigma"] == 1.0  # the reference inference's noise
    assert result["steps"] == [3, 6] and result["landscapes"] == 3  # n = 1, 2 = ceil(5 / 3)
    for i, n in enumerate((1, 2)):
        schedule = [landscape for landscape in range(3) for _ in range(n)]
        assert close(result["ppl"][i], dense_ppl(model, schedule, 0.0))
        assert close(result["ppl_langevin"][i], dense_ppl(model, schedule, 1.0))
    # not the final-landscape chain of the same length: the protocols differ
    assert not close(result["ppl"][1], dense_ppl(model, [0, 1, 2, 2, 2, 2], 0.0))
    # the default variant has one landscape: x = 1..M
    flat = ebt(variant="default", refine_steps=2)
    result, _ = think_task(flat, batches(), max_steps=4, sigma=0.5, seed=SEED)
    assert result["steps"] == [1, 2, 3, 4] and result["sigma"] == 0.5
    assert close(result["ppl_langevin"][2], dense_ppl(flat, [0, 0, 0], 0.5))


def test_final_landscape_protocol_is_the_earlier_one():
    model = ebt(refine_steps=3)
    result, _ = think_task(model, batches(), max_steps=5, seed=SEED, protocol="final_landscape")
    assert result["protocol"] == "final_landscape" and result["steps"] == [1, 2, 3, 4, 5]
    assert result["sigma"] == 3.0  # trained without noise: the paper's S2 sigma
    for point in range(5):  # one chain [0, 1, 2, 2, 2]: each point is its prefix
        assert close(result["ppl"][point], dense_ppl(model, [0, 1, 2, 2, 2], 0.0, point=point))
        assert close(result["ppl_langevin"][point], dense_ppl(model, [0, 1, 2, 2, 2], 3.0, point=point))
    noisy = ebt(refine_steps=2, langevin_sigma=0.25)
    assert think_task(noisy, batches()[:1], max_steps=2, seed=SEED, protocol="final_landscape")[0]["sigma"] == 0.25


def test_trained_point_is_the_validation_protocol_and_best_of_one_equals_it():
    # S2: 2 trained steps + at most 2 extra on the last landscape, trained noise 0.5
    model = ebt(refine_steps=2, random_extra_steps=(1, 2), langevin_sigma=0.5)
    result, _ = think_task(model, batches(), max_steps=6, bon_max=2, seed=SEED)
    assert result["trained_steps"] == 4 and result["validation_sigma"] == 0.5 and result["steps"] == [2, 4, 6]
    val_ppl = score_batches(model, batches(), SEED)["ppl"]  # the trainer's validation
    assert result["ppl_trained"] == pytest.approx(val_ppl, rel=1e-9)
    assert result["bon"]["1"] == pytest.approx(result["ppl_trained"], rel=1e-9)
    assert close(result["ppl_trained"], dense_ppl(model, [0, 1, 1, 1], 0.5))
    assert close(result["bon"]["2"], dense_ppl(model, [0, 1, 1, 1], 0.5, samples=2))
    at_least_trained = [p for s, p in zip(result["steps"], result["ppl"] + result["ppl_langevin"]) if s >= 4]
    at_least_trained += [p for s, p in zip(result["steps"], result["ppl_langevin"]) if s >= 4]
    best = min(at_least_trained + list(result["bon"].values()))
    assert result["best_ppl"] == best and result["gain"] == pytest.approx((val_ppl - best) / val_ppl, rel=1e-6)


def test_flat_reference_has_the_keys_and_steps_of_an_ebt_curve():
    model = ebt(variant="default", refine_steps=2)
    curve, _ = think_task(model, batches(), max_steps=4, bon_max=2, seed=SEED)
    tpp = build_model(ModelConfig(arch="transformer", n_layers=1, d_model=32, n_heads=2, vocab_size=VOCAB, context=16))
    flat = flat_reference(tpp, batches(), 4, 1, bon_max=2, seed=SEED, protocol="paper")
    assert set(flat) - {"flat"} == set(curve) and flat["steps"] == curve["steps"] and flat["protocol"] == "paper"


def test_protocol_option_parses_and_rejects_bad_values():
    assert parse_task("thinking,protocol=final_landscape,steps=4").options == {"protocol": "final_landscape",
                                                                              "steps": 4}
    assert parse_task("thinking,protocol=paper").get("protocol") == "paper"
    for bad in ("thinking,protocol=reference", "thinking,protocol="):
        with pytest.raises(ConfigError) as info:
            spec_from_dict({"eval": {"tasks": ["pretrain", bad]}})
        message = str(info.value)
        assert message.startswith(f"spec: eval.tasks: {bad!r}: option protocol must be one of paper, final_landscape")
        assert "\n" not in message
    with pytest.raises(ConfigError, match="not valid for dyck"):
        parse_task("dyck,protocol=paper")
    with pytest.raises(ValueError, match="paper, final_landscape"):
        think_task(ebt(), batches()[:1], max_steps=2, protocol="last")


def _evaluations(protocol: str | None, landscapes: int = 2) -> dict:
    task = {"steps": [2, 4], "ppl": [30.0, 29.0], "ppl_langevin": [31.0, 28.5], "sigma": 1.0, "landscapes": landscapes,
            "bon": {"1": 30.0, "2": 29.5}, "bon_energy": {"1": -1.0, "2": -1.1}, "trained_steps": 2,
            "ppl_trained": 30.0, "best_ppl": 28.5, "gain": 0.05, "shift": 1.0, "energy_auroc": {"onehot": 0.6}}
    thinking = {"trained_steps": 2, "max_steps": 4, "sigma": 1.0, "examples": 4, "tasks": {"pretrain": task}}
    if protocol is not None:
        task["protocol"] = thinking["protocol"] = protocol
    return {"tasks": {"pretrain": {"ppl": 30.0, "nll": math.log(30.0), "tokens": 10}}, "thinking": thinking,
            "energy_auroc": 0.6}


def _figure_texts(monkeypatch, tmp_path, evaluations: dict) -> tuple[str, list[str]]:
    drawn = []
    render = figures.render
    monkeypatch.setattr(figures, "render", lambda fig, *a: drawn.append(fig) or render(fig, *a))
    plot_thinking(None, evaluations, tmp_path / "thinking.png")
    (fig,) = drawn
    return fig._suptitle.get_text(), [ax.get_xlabel() for ax in fig.axes]


def test_plot_table_and_report_state_the_protocol(monkeypatch, tmp_path):
    title, xlabels = _figure_texts(monkeypatch, tmp_path, _evaluations("paper", landscapes=3))
    assert "thinking protocol: paper (n steps on each of the K energy landscapes" in title
    assert xlabels[0] == "refinement steps (n per landscape x K=3)"
    title, xlabels = _figure_texts(monkeypatch, tmp_path, _evaluations("final_landscape"))
    assert "thinking protocol: final_landscape" in title and "last landscape" in xlabels[0]
    title, _ = _figure_texts(monkeypatch, tmp_path, _evaluations(None))  # recorded before protocols were
    assert "final_landscape" in title
    text = format_evaluations(_evaluations("paper"))
    assert "thinking, protocol paper: n steps on each of the K energy landscapes" in text
    assert "final_landscape" in format_evaluations(_evaluations(None))
    sentence = thinking_protocol_sentence([{"evaluations": _evaluations("paper")}])
    assert sentence.startswith("Thinking protocol: paper (n steps on each") and "σ=1.0" in sentence
    # results of another protocol are not the same curves: merging replaces them
    old, new = _evaluations("final_landscape"), _evaluations("paper")
    new["thinking"]["tasks"] = {"dyck": new["thinking"]["tasks"]["pretrain"]}
    assert set(merge_evaluations(old, new)["thinking"]["tasks"]) == {"dyck"}
    assert set(merge_evaluations(_evaluations("paper"), new)["thinking"]["tasks"]) == {"pretrain", "dyck"}
