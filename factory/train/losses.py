"""The UltraCaption preference loss: DPO + normalised SFT + BCO, and the plain SFT loss.

A pair is an image prompt x with a chosen (human-corrected) caption y_c and a rejected
(model) caption y_r. logπ(y|x) is the SUM of the response tokens' log-probabilities under
the policy π; π_ref is the frozen reference (for PEFT, the base with the adapter disabled).

    r_c   = β · (logπ(y_c|x) − logπ_ref(y_c|x))        implicit reward of the chosen caption
    r_r   = β · (logπ(y_r|x) − logπ_ref(y_r|x))        implicit reward of the rejected caption

    L_DPO = −log σ(r_c − r_r)
    L_SFT = −logπ(y_c|x) / |y_c|                       chosen NLL per token of y_c
    L_BCO = −log σ(r_c − δ) − log σ(−(r_r − δ))

    L     = a1 · L_DPO + a2 · L_SFT + a3 · L_BCO       each term a mean over the batch;
                                                       defaults a = (0.8, 1.0, 0.2), β = 0.1

δ is the moving average of past rewards: the mean of the chosen and rejected rewards of the
batches seen before this one, either a running mean over all of them or an EMA, starting
at 0. It is a constant to the gradient, and a batch's own rewards move it only after that
batch's loss is computed (so a batch is never judged against itself).

The chosen and rejected rewards are returned (detached, batch means) so the known DPO
collapse, where both rewards fall together while the margin still grows, shows in the logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

IGNORE_INDEX = -100


class PreferenceLossConfig(BaseModel):
    """Weights and temperature of the combined preference loss (UltraCaption defaults)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(
        0.1, gt=0, description="β: scales the policy/reference log-ratio into a reward"
    )
    dpo_weight: float = Field(0.8, ge=0, description="a1: weight of the DPO term")
    sft_weight: float = Field(
        1.0, ge=0, description="a2: weight of the per-token NLL of the chosen caption"
    )
    bco_weight: float = Field(0.2, ge=0, description="a3: weight of the BCO term")
    delta_momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=(
            "BCO shift δ: None keeps a running mean over all past rewards; a value m keeps "
            "an EMA, δ ← m·δ + (1 − m)·batch mean"
        ),
    )


class RewardShift:
    """The BCO shift δ: a moving average of past implicit rewards, starting at 0.

    Under torch.distributed (Ray Train's data-parallel workers), each update averages the
    batch over all workers, so every worker holds the same δ and the rank-0 checkpoint
    restores it for all of them.
    """

    def __init__(self, momentum: float | None = None) -> None:
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self._value = 0.0
        self._count = 0  # rewards seen so far: the running mean's weight

    @property
    def value(self) -> float:
        """The current δ, a plain float: a constant to autograd."""
        return self._value

    @property
    def count(self) -> int:
        """How many rewards have moved δ so far (over all workers)."""
        return self._count

    @torch.no_grad()
    def update(self, rewards: Tensor) -> None:
        """Move δ towards the mean of `rewards` (any shape; typically chosen and rejected)."""
        total, count = _global_sum_and_count(rewards.detach())
        if count == 0:
            return
        if self.momentum is None:
            self._value = (self._value * self._count + total) / (self._count + count)
        else:
            self._value = self.momentum * self._value + (1.0 - self.momentum) * total / count
        self._count += count

    def state_dict(self) -> dict[str, Any]:
        return {"value": self._value, "count": self._count, "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a run resumed with another averaging rule would silently change what δ means
        if state.get("momentum", self.momentum) != self.momentum:
            raise ValueError(
                f"checkpoint δ was kept with momentum {state['momentum']}, "
                f"this run uses {self.momentum}"
            )
        self._value = float(state["value"])
        self._count = int(state["count"])


def _global_sum_and_count(rewards: Tensor) -> tuple[float, int]:
    """Sum and count of `rewards`, summed over workers when a process group is running."""
    stats = torch.stack(
        [rewards.double().sum(), torch.tensor(rewards.numel(), dtype=torch.float64)]
    ).to(rewards.device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(stats)
    total, count = stats.tolist()
    return total, int(count)


def sequence_logps(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Per-sequence sum of the label tokens' log-probabilities, and their token counts.

    logits [B, T, V], labels [B, T] aligned with the input ids, prompt and padding set to
    `ignore_index`. As in a causal LM, position t predicts token t + 1, so logits[:, :-1]
    are scored against labels[:, 1:]. Returns (logps [B] float32, counts [B] int64).
    """
    logits = logits[:, :-1].float()  # float32: bf16 log-softmax loses the small differences
    labels = labels[:, 1:]
    mask = labels != ignore_index
    safe_labels = labels.masked_fill(~mask, 0)  # any valid index; masked out below
    picked = logits.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def sft_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Token-mean cross entropy over all label tokens of the batch, with the causal shift.

    Equals −sum(sequence_logps) / sum(counts): long captions weigh by their length, as in
    plain SFT (unlike L_SFT of the preference loss, which normalises each caption first).
    """
    shifted = logits[:, :-1].float()
    return F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=ignore_index,
    )


@dataclass(frozen=True)
class PreferenceLoss:
    """The combined loss (to backpropagate), its terms and detached batch-mean metrics."""

    total: Tensor
    dpo: Tensor
    sft: Tensor
    bco: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor
    reward_margin: Tensor
    reward_accuracy: Tensor  # share of pairs with r_c > r_r
    delta: float  # the δ this batch's BCO term used (before the batch updated it)

    def metrics(self) -> dict[str, float]:
        """Plain floats for the trainer's report/logger."""
        return {
            "loss": self.total.item(),
            "loss_dpo": self.dpo.item(),
            "loss_sft": self.sft.item(),
            "loss_bco": self.bco.item(),
            "reward_chosen": self.chosen_reward.item(),
            "reward_rejected": self.rejected_reward.item(),
            "reward_margin": self.reward_margin.item(),
            "reward_accuracy": self.reward_accuracy.item(),
            "bco_delta": self.delta,
        }


def preference_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    chosen_tokens: Tensor,
    config: PreferenceLossConfig,
    shift: RewardShift,
    *,
    update_shift: bool = True,
) -> PreferenceLoss:
    """L = a1·L_DPO + a2·L_SFT + a3·L_BCO for a batch of pairs (see the module docstring).

    Inputs are per-sequence summed log-probabilities [B] (from `sequence_logps`) and the
    chosen captions' token counts [B]. The reference terms are detached here, so a caller
    that forgot `torch.no_grad()` still cannot train the reference. After the loss is
    built, the batch's rewards update `shift`; pass update_shift=False for evaluation.
    """
    ref_chosen, ref_rejected = ref_chosen.detach(), ref_rejected.detach()
    chosen_rewards = config.beta * (policy_chosen - ref_chosen)
    rejected_rewards = config.beta * (policy_rejected - ref_rejected)

    delta = shift.value
    dpo = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    # a caption with no label tokens would divide by zero; its NLL is 0 anyway
    sft = (-policy_chosen / chosen_tokens.clamp(min=1).to(policy_chosen.dtype)).mean()
    bco = (-F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))).mean()
    total = config.dpo_weight * dpo + config.sft_weight * sft + config.bco_weight * bco

    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    if update_shift:
        shift.update(torch.cat([chosen_rewards, rejected_rewards]))
    return PreferenceLoss(
        total=total,
        dpo=dpo,
        sft=sft,
        bco=bco,
        chosen_reward=chosen_rewards.mean(),
        rejected_reward=rejected_rewards.mean(),
        reward_margin=(chosen_rewards - rejected_rewards).mean(),
        reward_accuracy=(chosen_rewards > rejected_rewards).float().mean(),
        delta=delta,
    )
