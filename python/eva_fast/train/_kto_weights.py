"""Loss weights for KTO's chosen / rejected mix (KTO paper, Ethayarajh et al. 2024, Eq. 8; TRL's
check in ``KTOTrainer._prepare_dataset``). No TRL import: the data tools use it too."""

from __future__ import annotations

from dataclasses import dataclass

from eva_fast._checks import positive_number

#: The paper's EVA-KTO mix (§3.2): 63 % chosen, 37 % rejected.
PAPER_CHOSEN_FRACTION = 0.63
#: Bounds of ``desirable_weight * n_chosen / (undesirable_weight * n_rejected)`` recommended by the
#: KTO paper (Ethayarajh et al. 2024, Eq. 8) and checked by TRL (``KTOTrainer._prepare_dataset``).
KTO_WEIGHT_RATIO_RANGE = (1.0, 4.0 / 3.0)


@dataclass(frozen=True)
class KTOWeights:
    """Desirable / undesirable loss weights for a chosen / rejected mix.

    Attributes:
        desirable_weight, undesirable_weight: the weights to set (``KTOConfig`` fields).
        desirable_range: ``[lo, hi]`` of ``desirable_weight`` TRL accepts with the other weight as set.
        undesirable_range: likewise for ``undesirable_weight``.
        ratio: ``desirable_weight * n_chosen / (undesirable_weight * n_rejected)`` (in [1, 4/3]).
    """

    desirable_weight: float
    undesirable_weight: float
    desirable_range: tuple[float, float]
    undesirable_range: tuple[float, float]
    ratio: float


def recommended_kto_weights(chosen: float, rejected: float, *, ratio: float = 1.0) -> KTOWeights:
    """The loss weights the KTO paper (Eq. 8) and TRL recommend for a chosen / rejected mix.

    The paper asks for ``desirable_weight * n_chosen / (undesirable_weight * n_rejected)`` in
    ``[1, 4/3]``; TRL warns when neither weight is in that range (``KTOTrainer._prepare_dataset``).
    The minority class gets the larger weight and the other stays 1.0, so that the ratio equals
    ``ratio``. For the paper's 63 % / 37 % mix: ``desirable_weight=1.0``, ``undesirable_weight=
    0.63 / 0.37 = 1.70`` (at ``ratio=1``; TRL's range for it is [1.28, 1.70]).

    Args:
        chosen, rejected: counts (or fractions) of chosen and rejected samples, > 0.
        ratio: target of the ratio above, in ``[1, 4/3]``.

    Raises:
        ValueError: non-positive or non-finite counts, ``ratio`` outside ``[1, 4/3]``.
    """
    for name, v in (("chosen", chosen), ("rejected", rejected)):
        positive_number(name, v, what="number (count or fraction)")
    lo, hi = KTO_WEIGHT_RATIO_RANGE
    if not (lo <= ratio <= hi + 1e-12):
        raise ValueError(f"ratio must be in [1, 4/3] (KTO paper Eq. 8), got {ratio!r}")
    if chosen >= rejected:
        des, und = 1.0, chosen / (ratio * rejected)
    else:
        des, und = ratio * rejected / chosen, 1.0
    return KTOWeights(
        desirable_weight=des,
        undesirable_weight=und,
        desirable_range=(rejected * und / chosen * lo, rejected * und / chosen * hi),
        undesirable_range=(chosen * des / rejected / hi, chosen * des / rejected / lo),
        ratio=des * chosen / (und * rejected),
    )


def weights_in_recommended_range(num_chosen: int, num_rejected: int, desirable_weight: float,
                                 undesirable_weight: float) -> bool:
    """Whether ``desirable_weight * n_chosen / (undesirable_weight * n_rejected)`` lies in
    ``[1, 4/3]`` (KTO paper Eq. 8; TRL rounds its bounds to 2 decimals, this does not)."""
    if num_chosen <= 0 or num_rejected <= 0:
        return True  # one class only: the ratio is undefined and the weights do not interact
    r = desirable_weight * num_chosen / (undesirable_weight * num_rejected)
    lo, hi = KTO_WEIGHT_RATIO_RANGE
    return lo - 1e-9 <= r <= hi + 1e-9
