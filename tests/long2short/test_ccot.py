"""CCoT (compressed chain of thought): the pure math and data, the modules on a tiny Llama,
training that moves the losses and the adapters, inference that stops, the saved
directory, and ``k15 long2short ccot`` end to end."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F
from support.l2s_tiny import save_tiny, tiny_model, tiny_tokenizer

from rllib_k15.commands import long2short as l2s_cmd
from rllib_k15.long2short.ccot import (
    CCOT_DECODE_LOSS,
    CCOT_END_LOSS,
    CCOT_END_RECALL,
    CCOT_LOSS,
    CCoTRun,
    Phase,
    arithmetic_cot,
    contemplation_loss,
    cost_summary,
    end_labels,
    end_loss,
    examples_from_samples,
    num_contemplation,
    procedural_example,
    split_response,
    step_mask,
    subsample_indices,
    target_variance,
)
from rllib_k15.long2short.ccot_model import (
    CCoTModel,
    CCoTSettings,
    contemplations,
    teacher_states,
    train_decode,
    train_phi,
)
from rllib_k15.long2short.ccot_run import load_data
from rllib_k15.long2short.data import write_samples_parquet
from rllib_k15.long2short.selection import ProblemSamples, Sample


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls on a shared 2-core machine: one thread is ~100x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- k, the subsampling indices, masks ---------------------------------------------------


@pytest.mark.parametrize(
    "m,ratio,k",
    [
        (30, 0.1, 3),  # 0.1 * 30 is 3.0000000000000004 in floats: exact arithmetic gives 3
        (31, 0.1, 4),  # ceil(3.1)
        (7, 0.2, 2),  # ceil(1.4)
        (10, 0.2, 2),
        (3, 0.1, 1),  # ceil(0.3)
        (1, 0.1, 1),  # never zero steps
        (12, 1.0, 12),  # r = 1: no compression
    ],
)
def test_k_is_the_ceiling_of_r_times_m(m, ratio, k):
    assert num_contemplation(m, ratio) == k


@pytest.mark.parametrize("m,ratio", [(0, 0.1), (10, 0.0), (10, 1.5), (10, -0.1)])
def test_k_rejects_an_empty_cot_and_ratios_outside_0_1(m, ratio):
    with pytest.raises(ValueError):
        num_contemplation(m, ratio)


def test_subsampling_is_evenly_spaced_and_ends_at_the_last_cot_token():
    assert subsample_indices(10, 3) == [3, 6, 9]  # ceil(10/3)-1, ceil(20/3)-1, 10-1
    assert subsample_indices(10, 5) == [1, 3, 5, 7, 9]
    assert subsample_indices(7, 1) == [6]
    assert subsample_indices(4, 4) == [0, 1, 2, 3]
    for m in range(1, 41):
        for k in range(1, m + 1):
            idx = subsample_indices(m, k)
            assert len(idx) == k and idx[-1] == m - 1 and idx[0] >= 0
            assert all(b > a for a, b in zip(idx, idx[1:]))
            gaps = [b - a for a, b in zip([-1, *idx], idx)]
            assert max(gaps) - min(gaps) <= 1  # as even as integers allow
    with pytest.raises(ValueError):
        subsample_indices(3, 4)


def test_step_mask_and_end_labels_mark_the_kth_step():
    assert step_mask([1, 3], 3).tolist() == [[True, False, False], [True, True, True]]
    assert end_labels([1, 3], 3).tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert end_labels([2], 4).tolist() == [[0.0, 1.0, 0.0, 0.0]]  # after k: masked anyway


# --- losses -------------------------------------------------------------------------------


def test_contemplation_loss_is_the_masked_mean_and_ignores_padded_steps():
    torch.manual_seed(0)
    states, targets = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = step_mask([3, 1], 3)
    loss, metrics = contemplation_loss(states, targets, mask)
    rows = [
        (states[b, j] - targets[b, j]).pow(2).mean() for b, j in [(0, 0), (0, 1), (0, 2), (1, 0)]
    ]
    assert loss.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-6)
    assert metrics[CCOT_LOSS] == pytest.approx(metrics["ccot/mse"])  # no scaling
    states2 = states.clone()
    states2[1, 1:] = 1e6  # padded steps of row 1: must not matter
    assert contemplation_loss(states2, targets, mask)[0].item() == pytest.approx(loss.item())


def test_scaled_mse_divides_each_dimension_by_its_variance():
    states, targets = torch.zeros(1, 1, 2), torch.tensor([[[2.0, 2.0]]])
    variance = torch.tensor([1.0, 4.0])
    loss, metrics = contemplation_loss(states, targets, step_mask([1], 1), variance)
    assert loss.item() == pytest.approx((4 / 1 + 4 / 4) / 2)
    assert metrics["ccot/mse"] == pytest.approx(4.0)


def test_target_variance_is_per_dimension_with_a_floor():
    rows = [torch.tensor([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0]]), torch.tensor([[4.0, 1.0, 5.0]])]
    var = target_variance(rows, floor=0.1)
    expected = torch.tensor([8 / 3, 0.0, 0.0]).clamp(min=0.1 * 8 / 9)
    assert torch.allclose(var, expected)


def test_end_loss_is_class_balanced_bce_on_the_real_steps_only():
    logits = torch.tensor([[2.0, -1.0, 9.0], [0.5, -3.0, 1.0], [4.0, 7.0, 7.0]])
    loss, metrics = end_loss(logits, [2, 3, 1])

    def bce(x: float, y: float) -> float:
        return F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(float(y))).item()

    row0 = 0.5 * bce(-1.0, 1) + 0.5 * bce(2.0, 0)  # step 3 is masked
    row1 = 0.5 * bce(1.0, 1) + 0.5 * (bce(0.5, 0) + bce(-3.0, 0)) / 2
    row2 = bce(4.0, 1)  # k = 1: only the stop step
    assert loss.item() == pytest.approx((row0 + row1 + row2) / 3)
    # right: row 1's -3 (stay) and 1.0 (stop), row 2's 4.0 (stop)
    assert metrics["ccot/end_accuracy"] == pytest.approx(3 / 6)
    assert metrics[CCOT_END_RECALL] == pytest.approx(2 / 3)  # rows 1 and 2 stop at k
    assert metrics[CCOT_END_LOSS] == pytest.approx(loss.item())
    # a head that never stops is no longer cheap: its loss exceeds an uninformed one's
    never, _ = end_loss(torch.tensor([[-6.0, -6.0, -6.0, -6.0]]), [4])
    uninformed, _ = end_loss(torch.zeros(1, 4), [4])
    assert never.item() > uninformed.item()


def test_cost_summary_counts_contemplation_steps_plus_answer_tokens():
    costs = cost_summary([2, 4], [5, 5], [40, 60], [0.1, 0.3], [1.0, 1.0])
    assert costs["mean_ccot_decode_steps"] == 8.0
    assert costs["decoding_steps_saved"] == pytest.approx(1 - 8 / 50)
    assert costs["wall_time_speedup"] == pytest.approx(1.0 / 0.2)


# --- procedural CoTs and CoTs from samples ------------------------------------------------


def test_addition_cot_goes_column_by_column_with_carries():
    cot, value = arithmetic_cot("47 + 25")
    assert value == 72
    assert cot.splitlines() == [
        "47 + 25:",
        "7 + 5 = 12, write 2, carry 1",
        "4 + 2 + 1 = 7, write 7",
        "47 + 25 = 72",
    ]
    assert arithmetic_cot("95 + 17")[0].splitlines()[-2:] == ["write 1", "95 + 17 = 112"]


@pytest.mark.parametrize(
    "expression,value,partials",
    [
        ("390 - 800 - 830 - 717", -1957, ["390 - 800 = -410", "-410 - 830 = -1240"]),
        ("12 + 34 * 5", 182, ["34 * 5 = 170", "12 + 170 = 182"]),  # * before +
        ("(3 + 4) * 6", 42, ["3 + 4 = 7", "7 * 6 = 42"]),
        ("59821 * 47207", 59821 * 47207, ["59821 * 7 = 418747", "59821 * 40000 = 2392840000"]),
        ("-5 + 3", -2, ["-5 + 3 = -2"]),
    ],
)
def test_expression_cots_write_every_partial_result(expression, value, partials):
    cot, got = arithmetic_cot(expression)
    assert got == value
    for line in partials:
        assert line in cot.splitlines()
    assert cot.splitlines()[-1].endswith(str(value))


def test_unsupported_expressions_and_wrong_gold_are_errors():
    with pytest.raises(ValueError, match="unsupported"):
        arithmetic_cot("7 / 2")

    class P:
        id, prompt, answer, metadata = "p1", "Calculate 2 + 2.", "5", {"expression": "2 + 2"}

    with pytest.raises(ValueError, match="p1.*gold"):
        procedural_example(P())
    P.metadata = {}
    with pytest.raises(ValueError, match="p1.*no arithmetic expression"):
        procedural_example(P())


@pytest.mark.parametrize(
    "response,expected",
    [
        ("2 + 3 = 5\nSo \\boxed{5}", ("2 + 3 = 5", "So \\boxed{5}")),
        ("a\nb\n\\boxed{7}\nDone.", ("a\nb", "\\boxed{7}\nDone.")),  # line of the last box
        ("think\nAnswer: 9", ("think", "Answer: 9")),  # no box: the last line
        ("\\boxed{5}", None),  # one line: no CoT
        ("", None),
    ],
)
def test_split_response_cuts_before_the_answer_line(response, expected):
    assert split_response(response) == expected


def test_examples_from_samples_take_the_shortest_correct_and_drop_test_prompts():
    groups = [
        ProblemSamples(
            "a",
            "1+1?",
            [
                Sample("x\n\\boxed{3}", 9, False),
                Sample("long think\n1+1=2\n\\boxed{2}", 12, True),
                Sample("1+1=2\n\\boxed{2}", 7, True),
            ],
        ),
        ProblemSamples("b", "2+2?", [Sample("no\n\\boxed{5}", 5, False)]),
        ProblemSamples("c", "test?", [Sample("t\n\\boxed{1}", 3, True)]),
        ProblemSamples("d", "3+3?", [Sample("\\boxed{6}", 3, True)]),
    ]
    examples, dropped = examples_from_samples(groups, exclude_prompts={"test?"})
    assert [(e.problem_id, e.cot, e.answer) for e in examples] == [("a", "1+1=2", "\\boxed{2}")]
    assert dropped == {"no_correct": 1, "no_cot": 1, "test_overlap": 1}


def test_load_data_uses_the_env_splits_and_keeps_test_problems_out_of_training(tmp_path):
    run = CCoTRun(
        model="unused",
        out=str(tmp_path),
        env_kwargs={"difficulty": 2},
        train_problems=12,
        test_problems=6,
    )
    data = load_data(run)
    train_prompts, test_prompts = (
        {e.prompt for e in data["train"]},
        {p.prompt for p in data["test"]},
    )
    assert len(data["train"]) == 12 and len(data["test"]) == 6
    assert not train_prompts & test_prompts
    assert data["test_kwargs"] == {"difficulty": 2, "split": "test", "size": 6}
    assert all(r.cot and r.answer.startswith("\\boxed{") for r in data["references"])
    # from samples: the env comes from the file's info; a test-split problem is dropped
    test = data["test"][0]
    groups = [
        ProblemSamples(test.id, test.prompt, [Sample(f"x\n\\boxed{{{test.answer}}}", 4, True)]),
        ProblemSamples("t1", "Calculate 1 + 2.", [Sample("1 + 2 = 3\n\\boxed{3}", 9, True)]),
    ]
    path = write_samples_parquet(
        groups,
        tmp_path / "s.parquet",
        {"env": "k15/Arithmetic-v0", "env_kwargs": {"difficulty": 2}},
    )
    data = load_data(
        CCoTRun(
            model="unused", out=str(tmp_path), env=None, from_samples=str(path), test_problems=6
        )
    )
    assert [e.problem_id for e in data["train"]] == ["t1"]
    assert data["source"]["dropped"]["test_overlap"] == 1 and data["references"] is None
    with pytest.raises(ValueError, match="must not set 'split'"):
        load_data(CCoTRun(model="m", out=str(tmp_path), env_kwargs={"split": "train"}))


# --- the modules on a tiny Llama ------------------------------------------------------------


def _base(seed: int = 0):
    """The tiny Llama with a larger init: its logits can move far enough for ψ to learn."""
    return tiny_model(seed, initializer_range=0.2)


def _ccot(seed: int = 0, **settings) -> CCoTModel:
    fields = dict(
        base_model="unused", layer=1, ratio=0.2, max_contemplation=6, lora_r=4, lora_alpha=8.0
    )
    return CCoTModel.create(_base(seed), tiny_tokenizer(), CCoTSettings(**{**fields, **settings}))


PROMPTS = [[72, 101, 108, 108, 111, 33], [49, 43, 49]]  # two prompts of different lengths


def test_contemplation_shapes_and_the_projection_into_embedding_space():
    ccot = _ccot()
    c = ccot.contemplate(PROMPTS, 4)
    assert c.inputs.shape == (2, 4, 32) and c.states.shape == (2, 4, 32)
    assert c.end_logits.shape == (2, 4)
    # P(h) = rho * y / RMS(y), y = W h + b: every contemplation embedding has the RMS of the
    # embedding table, whatever the hidden state's scale; W starts as I (direction of h kept)
    rho = ccot.lm.get_input_embeddings().weight.pow(2).mean().sqrt()
    assert ccot.heads.embed_rms.item() == pytest.approx(rho.item())
    assert torch.allclose(c.inputs.pow(2).mean(-1).sqrt(), rho.expand(2, 4), rtol=1e-4)
    h = torch.randn(5, 32) * torch.tensor([1.0, 10.0, 100.0, 0.1, 3.0])[:, None]
    out = ccot.heads.proj(h)
    assert torch.allclose(out.pow(2).mean(-1).sqrt(), rho.expand(5), rtol=1e-4)
    assert torch.allclose(F.cosine_similarity(out, h, dim=-1), torch.ones(5), atol=1e-5)


def test_cached_contemplation_equals_one_forward_over_prompt_and_its_embeddings():
    """Left padding, position ids and the KV cache: the step-by-step states equal one
    full forward pass over [embed(prompt); c_1..c_K] for each prompt alone."""
    ccot = _ccot()
    with torch.no_grad():
        batched = ccot.contemplate(PROMPTS, 3)
        for b, prompt in enumerate(PROMPTS):
            embeds = ccot.embed(torch.tensor([prompt]))
            full = torch.cat([embeds, batched.inputs[b : b + 1]], dim=1)
            out = ccot.backbone(inputs_embeds=full, output_hidden_states=True)
            states = out.hidden_states[1][0, len(prompt) :]
            assert torch.allclose(states, batched.states[b], atol=1e-5)
            # c_{j+1} = P(final hidden state at the position of c_j)
            nxt = ccot.heads.proj(out.last_hidden_state[0, len(prompt) - 1 : -1])
            assert torch.allclose(nxt, batched.inputs[b], atol=1e-5)


def test_teacher_targets_are_layer_l_states_at_the_subsampled_cot_positions():
    base, tok = tiny_model(0), tiny_tokenizer()
    prompt, cot = [1, 2, 3], list(tok("1 + 2 = 3, so 3")["input_ids"])
    states = teacher_states(base, 1, prompt, cot)
    assert states.shape == (len(cot), 32)
    full = base.model(input_ids=torch.tensor([prompt + cot]), output_hidden_states=True)
    assert torch.allclose(states, full.hidden_states[1][0, 3:])
    k = num_contemplation(len(cot), 0.2)
    assert states[subsample_indices(len(cot), k)].shape == (k, 32)


def test_decode_loss_is_cross_entropy_on_the_answer_tokens_only():
    ccot = _ccot()
    c = torch.randn(2, 32)
    row = ([5, 6, 7], c, [40, 41, 258])
    loss, metrics = ccot.decode_loss([row])
    embeds = torch.cat(
        [ccot.embed(torch.tensor([5, 6, 7])), c, ccot.embed(torch.tensor([40, 41, 258]))]
    )
    logits = ccot.lm(inputs_embeds=embeds[None]).logits[0]
    # position 4 (last contemplation) predicts 40, 5 predicts 41, 6 predicts EOS
    expected = F.cross_entropy(logits[4:7], torch.tensor([40, 41, 258]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics[CCOT_DECODE_LOSS] == pytest.approx(loss.item())
    longer = ([5, 6, 7, 8, 9, 10, 11], torch.randn(4, 32), [42, 258])
    both = ccot.decode_loss([row, longer])[0]  # padding adds nothing: token mean over 5
    alone = ccot.decode_loss([longer])[0]
    assert both.item() == pytest.approx((3 * loss.item() + 2 * alone.item()) / 5, rel=1e-5)


def _lora(ccot: CCoTModel, adapter: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in ccot.model.named_parameters() if f".{adapter}." in n}


def _changed(before: dict[str, torch.Tensor], ccot: CCoTModel) -> int:
    now = dict(ccot.model.named_parameters())
    return sum(not torch.equal(v, now[n]) for n, v in before.items())


def test_training_lowers_the_losses_moves_the_right_adapter_and_inference_stops(tmp_path):
    torch.manual_seed(0)
    ccot = _ccot()
    tok = ccot.tokenizer
    data = [
        ("2+3", "2 + 3 = 5, so", "\\boxed{5}"),
        ("4+4", "4 + 4 = 8, so", "\\boxed{8}"),
        ("1+6", "1 + 6 = 7, so", "\\boxed{7}"),
        ("9+0", "9 + 0 = 9 ok", "\\boxed{9}"),
    ]
    prompts = [list(tok(p)["input_ids"]) for p, _, _ in data]
    targets = []
    for prompt, (_, cot, _) in zip(prompts, data):
        ids = list(tok(cot)["input_ids"])
        states = teacher_states(ccot.lm, 1, prompt, ids)
        targets.append(states[subsample_indices(len(ids), num_contemplation(len(ids), 0.2))])
    phase = Phase(epochs=12, lr=1e-2, batch_size=2, progress=False)
    ccot_before, decode_before = _lora(ccot, "ccot"), _lora(ccot, "decode")
    heads_before = {n: p.detach().clone() for n, p in ccot.heads.named_parameters()}
    logged: list[dict[str, float]] = []
    phi = train_phi(
        ccot,
        list(zip(prompts, targets)),
        target_variance(targets),
        phase,
        lambda step, m: logged.append(m),
    )
    assert phi["epoch_losses"][-1] < 0.5 * phi["epoch_losses"][0], phi["epoch_losses"]
    assert logged[-1][CCOT_END_LOSS] < logged[0][CCOT_END_LOSS]
    assert _changed(ccot_before, ccot) == len(ccot_before)  # every ccot LoRA tensor moved
    assert _changed(decode_before, ccot) == 0  # ψ untouched by φ's phase
    assert all(not torch.equal(p, heads_before[n]) for n, p in ccot.heads.named_parameters())

    ks = [len(t) for t in targets]
    cs = contemplations(ccot, prompts, ks, batch_size=3)
    assert [c.shape for c in cs] == [(k, 32) for k in ks]
    answers = [list(tok(a)["input_ids"]) + [tok.eos_token_id] for _, _, a in data]
    phi_after = _lora(ccot, "ccot")
    ccot.reset_decode()  # what a run does before (re)training ψ: B = 0 again
    assert all(not v.any() for n, v in _lora(ccot, "decode").items() if "lora_B" in n)
    decode_before = _lora(ccot, "decode")
    dec = train_decode(ccot, list(zip(prompts, cs, answers)), phase)
    assert dec["epoch_losses"][-1] < 0.5 * dec["epoch_losses"][0], dec["epoch_losses"]
    assert _changed(decode_before, ccot) == len(decode_before)
    assert _changed(phi_after, ccot) == 0

    result = ccot.answer(prompts[0])
    assert 1 <= result.steps <= ccot.settings.max_contemplation
    assert result.text == tok.decode(result.answer_ids, skip_special_tokens=True)
    # END decides: a head that always says "stop" stops after one step; "never" hits the cap
    with torch.no_grad():
        ccot.heads.end.weight.zero_()
        ccot.heads.end.bias.fill_(20.0)
        assert ccot.answer(prompts[0]).steps == 1
        ccot.heads.end.bias.fill_(-20.0)
        assert ccot.answer(prompts[0]).steps == ccot.settings.max_contemplation

    # round trip: the saved adapters + heads + settings answer exactly the same
    ccot.heads.end.bias.data.fill_(0.3)
    expected = ccot.answer(prompts[1])
    ccot.save(tmp_path / "ccot")
    loaded = CCoTModel.load(tmp_path / "ccot", base=_base(0), tokenizer=tok)
    assert loaded.settings == ccot.settings
    again = loaded.answer(prompts[1])
    assert (again.answer_ids, again.steps) == (expected.answer_ids, expected.steps)
    for name, p in ccot.model.named_parameters():
        if "lora_" in name:
            assert torch.equal(p, dict(loaded.model.named_parameters())[name]), name


def test_a_layer_outside_the_model_is_rejected():
    with pytest.raises(ValueError, match="--layer"):
        _ccot(layer=3)  # the tiny model has 2 layers


# --- k15 long2short ccot ---------------------------------------------------------------------


def k15(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="k15")
    l2s_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--ratios", "0"], "--ratios"),
        (["--ratios", "0.1", "0.1"], "--ratios"),
        (["--batch-size", "0"], "--batch-size"),
        (["--env-kwargs", "[1]"], "--env-kwargs"),
        (["--env-kwargs", "{bad"], "--env-kwargs"),
        (["--end-threshold", "1"], "--end-threshold"),
    ],
)
def test_bad_flags_are_named(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        k15("long2short", "ccot", "--model", "m", "--out", str(tmp_path), *flags)


def test_the_command_trains_evaluates_writes_rows_and_resumes(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny")
    out, results = tmp_path / "ccot", tmp_path / "results" / "eval.jsonl"
    argv = [
        "long2short",
        "ccot",
        "--model",
        str(model),
        "--env-kwargs",
        '{"difficulty": 2}',
        "--train-problems",
        "6",
        "--test-problems",
        "3",
        "--ratios",
        "0.1",
        "0.2",
        "--phi-epochs",
        "1",
        "--decode-epochs",
        "1",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--answer-max-tokens",
        "4",
        "--out",
        str(out),
        "--results",
        str(results),
        "--no-progress",
    ]
    assert k15(*argv) == 0
    assert "r=0.1: Pass@1" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["ccot-r0.1", "ccot-r0.2"]
    for r, row in zip(("0.1", "0.2"), rows):
        entry = report["ratios"][r]
        assert row["mean_tokens"] == pytest.approx(
            row["mean_contemplation_steps"] + row["mean_answer_tokens"]
        )
        assert row["num_problems"] == 3 and row["env_kwargs"]["split"] == "test"
        assert row["mean_full_cot_tokens"] == report["full_cot"]["mean_tokens"] > 0
        assert math.isfinite(row["seconds_per_problem_full_cot"])
        assert entry["phi"]["steps"] == 2 and entry["decode"]["steps"] == 2
        assert (out / f"r{r}" / "adapters" / "ccot" / "adapter_config.json").is_file()
    assert report["ratios"]["0.2"]["k_mean"] > report["ratios"]["0.1"]["k_mean"]
    # a rerun with the same settings skips every step (no new rows, same outputs)
    stamp = (out / "r0.1" / "phi.json").stat().st_mtime_ns
    assert k15(*argv) == 0
    assert len(results.read_text().splitlines()) == 2
    assert (out / "r0.1" / "phi.json").stat().st_mtime_ns == stamp
    # a changed eval setting re-evaluates only
    assert k15(*argv[:-1], "--end-threshold", "0.9", "--no-progress") == 0
    assert len(results.read_text().splitlines()) == 4
    assert (out / "r0.1" / "phi.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "r0.1" / "ccot.json").read_text())["end_threshold"] == 0.9


def test_the_command_reports_a_missing_samples_file(tmp_path, capsys):
    code = k15(
        "long2short",
        "ccot",
        "--model",
        str(save_tiny(tmp_path / "tiny")),
        "--out",
        str(tmp_path / "o"),
        "--from-samples",
        str(tmp_path / "none.parquet"),
    )
    assert code == 2
    assert "none.parquet" in capsys.readouterr().err


def test_the_command_trains_on_sampled_responses_against_the_greedy_full_cot(tmp_path):
    from rllib_k15.env_factory import make_unwrapped_env

    env = make_unwrapped_env("k15/Arithmetic-v0", {"difficulty": 2, "split": "train", "size": 5})
    groups = []
    for i in range(len(env)):
        p = env.problem(i)
        right = procedural_example(p)
        groups.append(
            ProblemSamples(
                p.id,
                p.prompt,
                [
                    Sample(f"{right.cot}\n{right.answer}", 40, True),
                    Sample("no idea\n\\boxed{0}", 6, False),
                ],
            )
        )
    info = {"env": "k15/Arithmetic-v0", "env_kwargs": {"difficulty": 2, "split": "train"}}
    samples = write_samples_parquet(groups, tmp_path / "samples.parquet", info)
    out = tmp_path / "ccot"
    code = k15(
        "long2short",
        "ccot",
        "--model",
        str(save_tiny(tmp_path / "tiny")),
        "--from-samples",
        str(samples),
        "--test-problems",
        "2",
        "--ratios",
        "0.2",
        "--phi-epochs",
        "1",
        "--decode-epochs",
        "1",
        "--lora-r",
        "2",
        "--answer-max-tokens",
        "3",
        "--full-cot-max-tokens",
        "5",
        "--out",
        str(out),
        "--no-progress",
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["num_train"] == 5 and report["data"]["from_samples"] == str(samples)
    assert report["env"] == "k15/Arithmetic-v0"
    assert report["test_env_kwargs"] == {"difficulty": 2, "split": "test", "size": 2}
    full = report["full_cot"]
    assert full["mode"] == "greedy" and 0 <= full["pass_at_1"] <= 1
    assert full["mean_tokens"] <= 5  # the base model's own CoT, capped
    assert report["ratios"]["0.2"]["row"]["num_problems"] == 2


@pytest.mark.slow
def test_the_command_on_tiny_random_llama(tiny_model_dir, tmp_path):
    """The registered tiny model (SmolLM2 tokenizer, chat template) through ``k15`` itself."""
    from rllib_k15.commands.k15 import main

    out = tmp_path / "ccot"
    code = main(
        [
            "long2short",
            "ccot",
            "--model",
            str(tiny_model_dir),
            "--env-kwargs",
            '{"difficulty": 2}',
            "--train-problems",
            "8",
            "--test-problems",
            "4",
            "--phi-epochs",
            "1",
            "--decode-epochs",
            "1",
            "--answer-max-tokens",
            "6",
            "--out",
            str(out),
            "--results",
            str(tmp_path / "eval.jsonl"),
            "--no-progress",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["ccot-r0.1", "ccot-r0.2"]
    assert all(r["mean_tokens"] < r["mean_full_cot_tokens"] for r in rows)
    loaded = CCoTModel.load(out / "r0.1")
    assert loaded.settings.layer == 1 and loaded.settings.ratio == 0.1
