"""End-of-run evaluations (harness/evaluation): perplexity, downstream formats and sets,
contamination, EBT thinking, AUROC, the trainer hook, the `eval` command and the report."""
from __future__ import annotations

import ast
import json
import math
import operator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ebt_scaling.analysis.evaluations import PAPER_TABLE3, format_table3, plot_thinking, table3
from ebt_scaling.harness.cli.main import main as cli_main
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import EvalSpec, spec_from_dict
from ebt_scaling.harness.data.batches import Batch
from ebt_scaling.harness.data.tokenizer import train_bpe
from ebt_scaling.harness.evaluation import tasks as T
from ebt_scaling.harness.evaluation.contamination import contamination, index_from_spans, training_index
from ebt_scaling.harness.evaluation.perplexity import score_batches
from ebt_scaling.harness.evaluation.task_grammar import parse_task, parse_tasks
from ebt_scaling.harness.evaluation.thinking import auroc, flat_reference, think_task
from ebt_scaling.harness.training.trainer import train_run
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX
from ebt_scaling.models.ebt_options import EBTOptions

TEXT = ("Question: What is the answer? Answer: the answer is forty two. " * 20 +
        "Complete the rest of the sequence ( [ { < > } ] ) and numbers 0 1 2 3 4 5 6 7 8 9 + - * = ? " * 20)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([TEXT], 300)


def tiny_model(arch: str, vocab: int = 300, context: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch=arch, n_layers=1, d_model=32, n_heads=2, vocab_size=vocab, context=context,
                                   options=EBTOptions(refine_steps=2) if arch == "ebt" else None))


# --------------------------------------------------------------------------- perplexity

def test_perplexity_is_exp_of_the_token_mean_nll_over_unequal_pads():
    model = tiny_model("transformer", vocab=50, context=8)
    g = torch.Generator().manual_seed(3)
    batches = []
    for lengths in ([8, 2], [3]):  # scored tokens per row: very unequal pads, unequal batches
        inputs = torch.randint(0, 50, (len(lengths), 8), generator=g)
        targets = torch.randint(0, 50, (len(lengths), 8), generator=g)
        for i, n in enumerate(lengths):
            targets[i, n:] = IGNORE_INDEX
        batches.append(Batch(inputs, targets, sum(lengths)))
    got = score_batches(model, batches)
    nlls = []
    with torch.no_grad():
        for b in batches:
            logp = F.log_softmax(model.logits(b.inputs).double(), -1)
            for i in range(len(b.inputs)):
                for j in range(8):
                    if b.targets[i, j] != IGNORE_INDEX:
                        nlls.append(-float(logp[i, j, b.targets[i, j]]))
    assert got["tokens"] == len(nlls) == 13
    assert got["nll"] == pytest.approx(sum(nlls) / len(nlls), rel=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(sum(nlls) / len(nlls)), rel=1e-5)
    per_batch = [math.exp(sum(nlls[:10]) / 10), math.exp(sum(nlls[10:]) / 3)]
    assert abs(got["ppl"] - sum(per_batch) / 2) > 1e-6 * got["ppl"]  # not a mean of per-batch exps


# --------------------------------------------------------------------------- format and masks

def test_format_all_tokens_and_answer_only_masks(tokenizer):
    ex = T.Example("What is 2 + 3?", "5")
    text, at = T.format_example(ex)
    assert text == "Question: What is 2 + 3?\nAnswer: 5" and text[at:] == " 5"
    long = T.Example("the answer is forty two " * 3, "forty two")
    enc = T.encode_examples([ex, long], tokenizer)
    pad = 1
    (b_all,) = T.example_batches(enc, 64, pad, 8, "all")
    for i, e in enumerate(enc):
        n = len(e.ids) - 1
        assert b_all.targets[i, :n].tolist() == e.ids[1:].tolist()  # every non-pad token scored
        assert (b_all.targets[i, n:] == IGNORE_INDEX).all() and (b_all.inputs[i, n:] == pad).all()
    (b_ans,) = T.example_batches(enc, 64, pad, 8, "answer")
    for i, (e, x) in enumerate(zip(enc, [ex, long])):
        scored = b_ans.targets[i][b_ans.targets[i] != IGNORE_INDEX].tolist()
        assert tokenizer.decode(scored) == " " + x.answer  # exactly the answer's tokens
    # truncation to the context: "all" keeps the start, "answer" keeps the end (the answer)
    short_ctx = 6
    (b_cut,) = T.example_batches(enc[1:], short_ctx, pad, 8, "all")
    assert b_cut.inputs.shape[1] == short_ctx and b_cut.targets[0].tolist() == enc[1].ids[1:short_ctx + 1].tolist()
    (b_cut_ans,) = T.example_batches(enc[1:], short_ctx, pad, 8, "answer")
    scored = b_cut_ans.targets[0][b_cut_ans.targets[0] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(scored) == " forty two"


# --------------------------------------------------------------------------- file formats

def test_gsm8k_squad_bigbench_fixtures_parse(tmp_path):
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = 5\n#### 5"})
                   + "\n\n" + json.dumps({"question": "Q2", "answer": "A2"}) + "\n")
    assert T.load_gsm8k(str(gsm)) == [T.Example("Tom has 3 apples and buys 2. How many?", "3 + 2 = 5\n#### 5"),
                                      T.Example("Q2", "A2")]
    assert len(T.load_gsm8k(str(gsm), n=1)) == 1
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": "Paris is the capital of France.", "qas": [
            {"id": "1", "question": "What is the capital of France?",
             "answers": [{"text": "Paris", "answer_start": 0}, {"text": "Paris, France", "answer_start": 0}]},
            {"id": "2", "question": "Unanswerable?", "answers": []}]}]}]}))
    assert T.load_squad(str(squad)) == [T.Example("Paris is the capital of France.\nWhat is the capital of France?",
                                                  "Paris")]
    bb = tmp_path / "dyck_languages" / "task.json"
    bb.parent.mkdir()
    bb.write_text(json.dumps({"name": "dyck_languages", "examples": [
        {"input": "[ { [", "target": "] } ]"},
        {"input": "( <", "target": ["> )", "other"]},
        {"input": "What is 1+1? choice: 3 choice: 2", "target_scores": {"3": 0, "2": 1}},
        {"input": "no target"}]}))
    assert T.load_bigbench(str(bb)) == [T.Example("[ { [", "] } ]"), T.Example("( <", "> )"),
                                        T.Example("What is 1+1? choice: 3 choice: 2", "2")]
    assert parse_task(f"bigbench={bb}").label == "bigbench_dyck_languages"
    assert parse_task("bigbench=/x/benchmark_tasks/elementary_math_qa/question_only/task.json").label == \
        "bigbench_elementary_math_qa_question_only"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    with pytest.raises(T.EvalDataError, match="line 1"):
        T.load_gsm8k(str(bad))
    with pytest.raises(T.EvalDataError, match="cannot read"):
        T.load_squad(str(tmp_path / "missing.json"))
    with pytest.raises(T.EvalDataError, match="examples"):
        T.load_bigbench(str(squad))


# --------------------------------------------------------------------------- generated sets

def _balanced(symbols: list[str]) -> bool:
    pairs = {")": "(", "]": "[", "}": "{", ">": "<"}
    stack = []
    for s in symbols:
        if s in "([{<":
            stack.append(s)
        elif not stack or stack.pop() != pairs[s]:
            return False
    return not stack


def test_dyck_completions_close_the_sequence():
    examples = T.dyck_examples(200, seed=7)
    assert examples == T.dyck_examples(200, seed=7) and examples != T.dyck_examples(200, seed=8)
    for ex in examples:
        prefix = ex.question.split("Input: ")[1].split()
        answer = ex.answer.split()
        assert answer and all(s in ")]}>" for s in answer)
        assert not _balanced(prefix)
        assert _balanced(prefix + answer)
        assert not any(_balanced(prefix + answer[:k]) for k in range(len(answer)))  # shortest completion


def _independent_value(expression: str) -> int:
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected syntax in {expression!r}")

    return walk(ast.parse(expression, mode="eval").body)


def test_arithmetic_answers_are_correct():
    examples = T.arithmetic_examples(300, seed=3)
    assert len(examples) == 300 and len({e.question for e in examples}) > 200
    for ex in examples:
        assert ex.question.startswith("What is ") and ex.question.endswith("?")
        assert int(ex.answer) == _independent_value(ex.question[len("What is "):-1])
    assert any("(" in e.question for e in examples) and any("*" in e.question for e in examples)


# --------------------------------------------------------------------------- grammar

def test_task_grammar_and_eval_spec_validation():
    t = parse_task("gsm8k=/data/test.jsonl,n=5,score=answer")
    assert (t.name, t.path, t.options, t.label) == ("gsm8k", "/data/test.jsonl", {"n": 5, "score": "answer"}, "gsm8k")
    assert parse_task("thinking,steps=8,sigma=0.5,bon=4").options == {"steps": 8, "sigma": 0.5, "bon": 4}
    assert EvalSpec(tasks=("pretrain", "dyck,seed=2", "thinking")).tasks[1] == "dyck,seed=2"
    for bad, why in [("perplexity", "unknown task"), ("gsm8k", "needs a file"), ("dyck=x", "takes no path"),
                     ("dyck,n=0", ">= 1"), ("thinking,bon=3", "power of two"), ("pretrain,score=answer", "not valid"),
                     ("dyck,n", "KEY=VALUE")]:
        with pytest.raises(ConfigError, match=why):
            EvalSpec(tasks=(bad,))
        with pytest.raises(ConfigError, match=why) as info:
            spec_from_dict({"eval": {"tasks": ["pretrain", bad]}})
        message = str(info.value)
        assert message.startswith(f"spec: eval.tasks: {bad!r}: ") and "\n" not in message
        assert "pretrain, dyck, arithmetic, gsm8k=PATH" in message
    with pytest.raises(ConfigError, match="duplicates"):
        parse_tasks(["dyck", "dyck,n=3"])
    parse_tasks(["dyck", "dyck,n=3,label=dyck_small"])
    with pytest.raises(ConfigError) as info:
        spec_from_dict({"eval": {"tasks": ["bogus"]}}, "sweep.yaml")
    assert str(info.value).startswith("sweep.yaml: eval.tasks: 'bogus'")


# --------------------------------------------------------------------------- thinking

def test_auroc_matches_a_hand_computed_example():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # ties count one half: positives {1, 2} vs negative {1}: (0.5 + 1) / 2
    assert auroc([1.0, 1.0, 2.0], [1, 0, 1]) == pytest.approx(0.75)
    assert auroc([3, 2, 1], [1, 1, 0]) == 1.0 and auroc([3, 2, 1], [0, 0, 1]) == 0.0
    assert auroc([1, 2], [1, 1]) is None


def _batches(vocab: int, seq: int = 12, seed: int = 5) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for rows in (3, 2):
        tokens = torch.randint(0, vocab, (rows, seq + 1), generator=g)
        targets = tokens[:, 1:].clone()
        targets[0, seq // 2:] = IGNORE_INDEX
        out.append(Batch(tokens[:, :-1].contiguous(), targets, int((targets != IGNORE_INDEX).sum())))
    return out


def test_thinking_curves_best_of_n_and_flat_reference():
    model = tiny_model("ebt", vocab=40)
    batches = _batches(40)
    result, raw = think_task(model, batches, max_steps=6, sigma=1.0, bon_max=8, seed=0)  # the paper protocol
    assert result["protocol"] == "paper" and result["sigma"] == 1.0
    assert result["steps"] == [2, 4, 6] and len(result["ppl"]) == len(result["ppl_langevin"]) == 3  # K=2 x n
    assert list(result["bon"]) == ["1", "2", "4", "8"]
    assert result["ppl_langevin"] != result["ppl"]
    energy = result["bon_energy"]
    assert energy["8"] <= energy["4"] <= energy["2"] <= energy["1"] and energy["8"] < energy["1"]
    # same seed per batch: n = 1 (one step per landscape) is the validation schedule of this
    # noiseless S1 model, so the curve's first point is the N = 1 candidate
    assert result["trained_steps"] == 2 and result["ppl"][0] == pytest.approx(result["bon"]["1"], rel=1e-9)
    assert result["ppl_trained"] == result["bon"]["1"] and 0 <= result["gain"] < 1
    earlier, _ = think_task(model, batches, max_steps=6, sigma=1.0, bon_max=2, seed=0, protocol="final_landscape")
    assert earlier["steps"] == [1, 2, 3, 4, 5, 6] and earlier["ppl"][1] == pytest.approx(result["ppl"][0], rel=1e-9)
    # BoN from prefixes of one 8-sample run equals EBT.think(samples=N) under the same seed
    nll, count = 0.0, 0
    for i, b in enumerate(batches):
        torch.manual_seed(0 + i)
        with torch.no_grad():
            r = model.think(b.inputs, b.targets, model.validation_schedule(), samples=4)
        nll += float(r.nll[-1].double().sum())
        count += int((b.targets != IGNORE_INDEX).sum())
    assert result["bon"]["4"] == pytest.approx(math.exp(nll / count), rel=1e-9)
    tokens = sum(int((b.targets != IGNORE_INDEX).sum()) for b in batches)
    assert result["tokens"] == tokens and len(raw["onehot"][0]) == 2 * tokens
    assert 0 <= result["energy_auroc"]["onehot"] <= 1
    flat = flat_reference(tiny_model("transformer", vocab=40), batches, 6, 2)
    assert len(set(flat["ppl"])) == 1 and set(flat["bon"].values()) == {flat["ppl"][0]} and flat["gain"] == 0
    assert flat["protocol"] == "paper" and set(flat) - {"flat"} == set(result)


# --------------------------------------------------------------------------- contamination

def test_contamination_index_detects_shared_ngrams():
    tokens = np.arange(100, dtype=np.uint16)
    index = index_from_spans(tokens, np.array([0, 50]), np.array([40, 50]), n=5)
    assert contamination([np.arange(10, 20)], index)["fraction"] == 1.0  # inside span 1
    assert contamination([np.arange(37, 47)], index)["flagged"] == 0  # between the spans: not training text
    assert contamination([np.array([5, 6, 7, 8, 10])], index)["flagged"] == 0
    small = index_from_spans(tokens, np.array([0]), np.array([100]), n=5, max_tokens=64)
    assert small.tokens_checked <= 64 + 5 and small.tokens_total == 100


def test_built_in_sets_and_a_fixture_have_no_overlap_with_shakespeare_and_injection_is_caught(tiny_spec):
    from ebt_scaling.harness.data.pipeline import open_dataset

    ds = open_dataset(tiny_spec("transformer"))
    index = training_index(ds)
    assert index.tokens_total > 1_000_000
    fixture = [T.Example("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                         "clips in May. How many clips did Natalia sell altogether?", "72"),
               T.Example("Paris is the capital and most populous city of France.\nWhat is France's capital?", "Paris")]
    starts, lengths = ds.store.spans("train")
    passage = ds.tokenizer.decode(np.asarray(ds.store.tokens[int(starts[0]) + 5000:int(starts[0]) + 5040]).tolist())
    injected = [fixture[0], T.Example(f"Who wrote this? {passage}", "Shakespeare")]
    for examples in (T.dyck_examples(64), T.arithmetic_examples(64), fixture):
        report = contamination([e.ids for e in T.encode_examples(examples, ds.tokenizer)], index)
        assert report["checked"] and report["fraction"] == 0.0, report
    report = contamination([e.ids for e in T.encode_examples(injected, ds.tokenizer)], index)
    assert report["flagged"] == 1 and report["fraction"] == 0.5


# --------------------------------------------------------------------------- wiring

TASKS = ["pretrain", "dyck,n=8", "arithmetic,n=8", "thinking,n=4,steps=4,bon=4"]


@pytest.fixture(scope="module")
def finished_ebt_run(data_cache, tmp_path_factory):
    spec = spec_from_dict({
        "model": {"arch": "ebt", "n_layers": 1, "d_model": 32, "n_heads": 2, "vocab_size": 512, "context": 32},
        "data": {"cache_dir": data_cache}, "train": {"tokens": 32 * 8 * 6, "batch_size": 8, "lr": 3e-3},
        "eval": {"points": 2, "batches": 2, "batch_size": 8, "tasks": TASKS},
        "checkpoint_every": 3, "log_every": 1, "device": "cpu"})
    path = tmp_path_factory.mktemp("ebt-run")
    return spec, path, train_run(spec, path, quiet=True)


def test_result_json_gets_evaluations_after_a_tiny_run(finished_ebt_run):
    spec, path, result = finished_ebt_run
    on_disk = RunDir(path).result()
    ev = on_disk["evaluations"]
    assert json.loads(json.dumps(ev)) == ev == result["evaluations"]  # plain JSON
    assert set(ev["tasks"]) == {"pretrain", "dyck", "arithmetic"}
    for label, r in ev["tasks"].items():
        assert "error" not in r, r
        assert r["tokens"] > 0 and r["ppl"] == pytest.approx(math.exp(r["nll"]))
    # pretrain = the trainer's own final validation (same batches, same seed)
    assert ev["tasks"]["pretrain"]["ppl"] == pytest.approx(on_disk["val_ppl"], rel=1e-6)
    assert ev["tasks"]["dyck"]["contamination"]["fraction"] == 0.0 and ev["tasks"]["dyck"]["examples"] == 8
    th = ev["thinking"]
    assert set(th["tasks"]) == {"pretrain", "dyck", "arithmetic"} and th["trained_steps"] == 2
    assert th["protocol"] == "paper" and th["sigma"] == 1.0  # the default protocol and its noise
    for r in th["tasks"].values():  # paper: n = 1, 2 steps on each of the K = 2 landscapes
        assert r["steps"] == [2, 4] and len(r["ppl_langevin"]) == 2 and list(r["bon"]) == ["1", "2", "4"]
        assert r["protocol"] == "paper"
    assert th["tasks"]["pretrain"]["shift"] == pytest.approx(1.0)
    assert 0 <= ev["energy_auroc"] <= 1


def test_eval_command_on_a_finished_run(finished_ebt_run, capsys, tmp_path):
    spec, path, _ = finished_ebt_run
    before = RunDir(path).result()
    assert cli_main(["eval", str(path), "--tasks", "pretrain", "dyck,n=4,label=dyck4", "--examples", "3",
                     "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)[str(path)]
    after = RunDir(path).result()
    assert after["evaluations"] == printed
    assert after["evaluations"]["tasks"]["dyck4"]["examples"] == 3
    assert after["evaluations"]["tasks"]["pretrain"]["examples"] == 3
    assert after["evaluations"]["thinking"] == before["evaluations"]["thinking"]  # other results kept
    assert after["evaluations"]["tasks"]["dyck"] == before["evaluations"]["tasks"]["dyck"]
    assert {k: v for k, v in after.items() if k != "evaluations"} == \
        {k: v for k, v in before.items() if k != "evaluations"}
    assert cli_main(["eval", str(path), "--tasks", "pretrain,n=2"]) == 0
    assert "pretrain" in capsys.readouterr().out
    assert cli_main(["eval", str(tmp_path), "--tasks", "pretrain"]) == 2  # not a run directory
    assert "no spec.yaml" in capsys.readouterr().err


# --------------------------------------------------------------------------- report

def test_table3_and_thinking_plot(tmp_path, tokenizer):
    def evals(ppl: dict, gain: float) -> dict:
        steps = [1, 2, 3, 4]
        return {"tasks": {k: {"ppl": v, "nll": math.log(v), "tokens": 10} for k, v in ppl.items()},
                "thinking": {"tasks": {k: {"steps": steps, "ppl": [v * 1.2, v, v * 0.95, v * 0.94],
                                           "ppl_langevin": [v * 1.3, v * 1.1, v, v * 0.99],
                                           "bon": {"1": v, "2": v * 0.97}, "trained_steps": 2, "sigma": 3.0,
                                           "ppl_trained": v, "best_ppl": v * (1 - gain), "gain": gain,
                                           "shift": v / ppl["pretrain"]} for k, v in ppl.items()}},
                "energy_auroc": 0.8}

    tpp = evals({"pretrain": 30.0, "gsm8k": 50.0, "bigbench_dyck_languages": 130.0, "arithmetic": 90.0}, 0.0)
    ebt = {"evaluations": evals({"pretrain": 33.0, "gsm8k": 44.0, "bigbench_dyck_languages": 120.0,
                                 "arithmetic": 80.0}, 0.06)}
    rows = table3(tpp, ebt)
    assert [r["task"] for r in rows] == ["pretrain", "gsm8k", "arithmetic", "bigbench_dyck_languages"]
    pre = rows[0]
    assert (pre["tpp_ppl"], pre["ebt_ppl"], pre["paper_tpp"], pre["paper_ebt"]) == (30.0, 33.0, 31.36, 33.43)
    assert pre["ebt_vs_tpp"] == pytest.approx(0.1)
    assert rows[3]["paper_tpp"] == PAPER_TABLE3["dyck"][1] and not rows[3]["proxy"]
    assert rows[2]["proxy"] and rows[2]["paper_ebt"] == 72.6
    assert rows[1]["ebt_thinking_ppl"] == pytest.approx(44.0 * 0.94)
    text = format_table3(rows)
    assert "| Pretraining (held-out) | 30.00 | 33.00 | +10.0% |" in text and "49.60" in text
    out = plot_thinking(tpp, ebt, tmp_path / "thinking.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
