"""The preference and SFT losses against references computed by hand with `math`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from factory.train.losses import (
    PreferenceLossConfig,
    RewardShift,
    preference_loss,
    sequence_logps,
    sft_loss,
)

# two pairs of summed log-probabilities, picked so every term is far from 0 and saturation
POLICY_CHOSEN = [-12.0, -30.0]
POLICY_REJECTED = [-15.0, -26.0]
REF_CHOSEN = [-14.0, -29.0]
REF_REJECTED = [-13.0, -27.0]
CHOSEN_TOKENS = [4, 10]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def reference_terms(beta: float, delta: float) -> dict[str, float]:
    """The issue's formulas, term by term, in plain floats."""
    r_c = [beta * (p - r) for p, r in zip(POLICY_CHOSEN, REF_CHOSEN, strict=True)]
    r_r = [beta * (p - r) for p, r in zip(POLICY_REJECTED, REF_REJECTED, strict=True)]
    dpo = mean([-log_sigmoid(c - r) for c, r in zip(r_c, r_r, strict=True)])
    sft = mean([-p / n for p, n in zip(POLICY_CHOSEN, CHOSEN_TOKENS, strict=True)])
    bco = mean(
        [-log_sigmoid(c - delta) - log_sigmoid(-(r - delta)) for c, r in zip(r_c, r_r, strict=True)]
    )
    return {"dpo": dpo, "sft": sft, "bco": bco, "r_c": mean(r_c), "r_r": mean(r_r)}


def inputs(requires_grad: bool = False) -> list[torch.Tensor]:
    return [
        torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)
        for values in (POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)
    ] + [torch.tensor(CHOSEN_TOKENS)]


def test_losses_equal_the_hand_computed_reference():
    config = PreferenceLossConfig()
    out = preference_loss(*inputs(), config=config, shift=RewardShift())
    want = reference_terms(beta=0.1, delta=0.0)
    assert out.dpo.item() == pytest.approx(want["dpo"], rel=1e-12)
    assert out.sft.item() == pytest.approx(want["sft"], rel=1e-12)
    assert out.bco.item() == pytest.approx(want["bco"], rel=1e-12)
    total = 0.8 * want["dpo"] + 1.0 * want["sft"] + 0.2 * want["bco"]
    assert out.total.item() == pytest.approx(total, rel=1e-12)
    assert out.chosen_reward.item() == pytest.approx(want["r_c"])
    assert out.rejected_reward.item() == pytest.approx(want["r_r"])
    assert out.reward_margin.item() == pytest.approx(want["r_c"] - want["r_r"])
    assert out.reward_accuracy.item() == 0.5  # pair 1: 0.2 > -0.2; pair 2: -0.1 < 0.1


def test_bco_uses_the_shift_before_this_batch_and_then_updates_it():
    shift = RewardShift()
    shift.load_state_dict({"value": 0.3, "count": 6, "momentum": None})
    out = preference_loss(*inputs(), config=PreferenceLossConfig(beta=0.5), shift=shift)
    want = reference_terms(beta=0.5, delta=0.3)
    assert out.delta == 0.3
    assert out.bco.item() == pytest.approx(want["bco"], rel=1e-12)
    # four new rewards (two chosen, two rejected) join the six already averaged
    rewards_sum = 2 * want["r_c"] + 2 * want["r_r"]
    assert shift.value == pytest.approx((0.3 * 6 + rewards_sum) / 10)
    assert shift.count == 10


def test_evaluation_can_leave_the_shift_alone():
    shift = RewardShift()
    preference_loss(*inputs(), config=PreferenceLossConfig(), shift=shift, update_shift=False)
    assert (shift.value, shift.count) == (0.0, 0)


def test_gradient_reaches_the_policy_but_not_the_reference():
    policy_c, policy_r, ref_c, ref_r, tokens = inputs(requires_grad=True)
    out = preference_loss(
        policy_c, policy_r, ref_c, ref_r, tokens, config=PreferenceLossConfig(), shift=RewardShift()
    )
    out.total.backward()
    assert policy_c.grad is not None and torch.all(policy_c.grad != 0)
    assert policy_r.grad is not None and torch.all(policy_r.grad != 0)
    assert ref_c.grad is None and ref_r.grad is None
    for metric in (out.chosen_reward, out.rejected_reward, out.reward_margin):
        assert not metric.requires_grad


def test_zero_weights_drop_their_terms():
    want = reference_terms(beta=0.1, delta=0.0)
    only = {
        "dpo": PreferenceLossConfig(sft_weight=0, bco_weight=0, dpo_weight=1),
        "sft": PreferenceLossConfig(dpo_weight=0, bco_weight=0),
        "bco": PreferenceLossConfig(dpo_weight=0, sft_weight=0, bco_weight=1),
    }
    for term, config in only.items():
        out = preference_loss(*inputs(), config=config, shift=RewardShift())
        assert out.total.item() == pytest.approx(want[term], rel=1e-12), term


def test_both_rewards_falling_shows_as_two_negative_rewards():
    # the policy lowered both captions below the reference, the chosen one less: the margin
    # (and DPO) still looks healthy while both rewards are negative
    ref = torch.tensor([-20.0, -25.0])
    out = preference_loss(
        ref - 5.0,
        ref - 40.0,
        ref,
        ref,
        torch.tensor([8, 8]),
        config=PreferenceLossConfig(),
        shift=RewardShift(),
    )
    assert out.chosen_reward.item() < 0 and out.rejected_reward.item() < 0
    assert out.reward_margin.item() > 0 and out.reward_accuracy.item() == 1.0
    assert out.metrics()["reward_chosen"] == pytest.approx(-0.5)
    assert out.metrics()["reward_rejected"] == pytest.approx(-4.0)


def test_running_mean_shift_averages_every_past_reward():
    shift = RewardShift()
    shift.update(torch.tensor([1.0, 3.0]))
    assert shift.value == pytest.approx(2.0)
    shift.update(torch.tensor([[6.0, 8.0], [10.0, 12.0]]))  # any shape
    assert shift.value == pytest.approx((1 + 3 + 6 + 8 + 10 + 12) / 6)
    shift.update(torch.tensor([]))
    assert shift.count == 6


def test_ema_shift_starts_at_zero_and_follows_batch_means():
    shift = RewardShift(momentum=0.9)
    shift.update(torch.tensor([1.0, 3.0]))
    assert shift.value == pytest.approx(0.1 * 2.0)
    shift.update(torch.tensor([4.0, 6.0]))
    assert shift.value == pytest.approx(0.9 * 0.2 + 0.1 * 5.0)


def test_shift_state_round_trips_and_a_resumed_run_continues_identically():
    shift = RewardShift(momentum=0.5)
    shift.update(torch.tensor([2.0, -1.0, 0.5]))
    resumed = RewardShift(momentum=0.5)
    resumed.load_state_dict(shift.state_dict())
    assert (resumed.value, resumed.count) == (shift.value, shift.count)
    shift.update(torch.tensor([4.0]))
    resumed.update(torch.tensor([4.0]))
    assert resumed.value == shift.value


def test_shift_refuses_a_checkpoint_kept_with_another_rule():
    with pytest.raises(ValueError, match="momentum"):
        RewardShift(momentum=0.9).load_state_dict(RewardShift().state_dict())
    with pytest.raises(ValueError):
        RewardShift(momentum=1.0)


def test_config_validates_and_forbids_unknown_fields():
    assert PreferenceLossConfig().model_dump() == {
        "beta": 0.1,
        "dpo_weight": 0.8,
        "sft_weight": 1.0,
        "bco_weight": 0.2,
        "delta_momentum": None,
    }
    with pytest.raises(ValidationError):
        PreferenceLossConfig(betta=0.2)
    with pytest.raises(ValidationError):
        PreferenceLossConfig(beta=0)
    with pytest.raises(ValidationError):
        PreferenceLossConfig(delta_momentum=1.0)


def small_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    labels = torch.tensor(
        [
            [-100, -100, 3, 1, 6],  # prompt of two tokens, three caption tokens
            [-100, 2, 5, -100, -100],  # two caption tokens, then padding
        ]
    )
    return logits, labels


def test_sequence_logps_sum_the_shifted_label_log_probs():
    logits, labels = small_batch()
    logps, counts = sequence_logps(logits, labels)
    expected = []
    for b in range(2):
        total = 0.0
        for t in range(1, 5):  # label t is predicted by the logits at t - 1
            if labels[b, t] != -100:
                row = logits[b, t - 1].tolist()
                log_norm = math.log(sum(math.exp(v) for v in row))
                total += row[labels[b, t]] - log_norm
        expected.append(total)
    assert logps.tolist() == pytest.approx(expected, rel=1e-5)
    assert counts.tolist() == [3, 2]


def test_sequence_logps_honours_a_custom_ignore_index_and_any_batch_size():
    logits, labels = small_batch()
    custom = labels.masked_fill(labels == -100, 0)
    custom[0, 3] = 0  # a real token 0 would be ignored too: that is the caller's choice
    logps, counts = sequence_logps(logits[:1], custom[:1], ignore_index=0)
    assert counts.tolist() == [2]
    single, _ = sequence_logps(logits[1:], labels[1:])
    full, _ = sequence_logps(logits, labels)
    assert single.item() == pytest.approx(full[1].item())
    assert logps.shape == (1,)


def test_sft_loss_is_cross_entropy_on_the_shifted_tokens_and_matches_sequence_logps():
    logits, labels = small_batch()
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert sft_loss(logits, labels).item() == pytest.approx(want.item(), rel=1e-6)
    logps, counts = sequence_logps(logits, labels)
    assert sft_loss(logits, labels).item() == pytest.approx(
        (-logps.sum() / counts.sum()).item(), rel=1e-6
    )


def test_sequence_logps_keep_bf16_logits_in_float32():
    logits, labels = small_batch()
    logps, _ = sequence_logps(logits.bfloat16().requires_grad_(), labels)
    assert logps.dtype == torch.float32
    logps.sum().backward()


def _shift_on_worker(rank: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    try:
        shift = RewardShift()
        # each worker sees its own batch; δ must be the mean over both
        shift.update(torch.tensor([1.0, 3.0]) if rank == 0 else torch.tensor([8.0]))
        results[rank] = (shift.value, shift.count)
    finally:
        torch.distributed.destroy_process_group()


def test_shift_is_shared_by_data_parallel_workers(tmp_path):
    # a forked manager inside a process running Ray breaks later Ray calls: spawn it
    manager = torch.multiprocessing.get_context("spawn").Manager()
    results = manager.dict()
    torch.multiprocessing.spawn(
        _shift_on_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True
    )
    assert dict(results) == {0: (4.0, 3), 1: (4.0, 3)}
