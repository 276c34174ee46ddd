"""CrowS-Pairs as a task: the log-likelihood of each pair's two sentences (optionally steered), and the share where
the more-stereotyping one is the more likely, overall and per bias type."""

from __future__ import annotations

from collections.abc import Sequence

from lens_steer.data.crows import CrowsPair
from lens_steer.forward.scoring import maybe_steer, sequence_logprobs
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.stats import metrics_to_dict
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.metrics import crows_metric
from lens_steer.tasks.result import BenchResult


def run_crows(
    model: HookedModel,
    pairs: Sequence[CrowsPair],
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> BenchResult:
    """Log-likelihood of each pair's sentences; the share where the more-stereotyping one is more likely."""
    texts = [s for p in pairs for s in (p.sent_more, p.sent_less)]
    with maybe_steer(model, vector, coeff):
        lps = sequence_logprobs(model, texts, max_batch=max_batch, progress=progress)
    more, less = lps[0::2], lps[1::2]
    records = [
        {
            "index": p.index,
            "bias_type": p.bias_type,
            "stereo_antistereo": p.stereo_antistereo,
            "sent_more": p.sent_more,
            "sent_less": p.sent_less,
            "logprob_more": m,
            "logprob_less": l,
            "more_preferred": m > l,
        }
        for p, m, l in zip(pairs, more, less)  # noqa: E741
    ]
    by_type: dict[str, tuple[list[float], list[float]]] = {}
    for r in records:
        a, b = by_type.setdefault(r["bias_type"], ([], []))
        a.append(r["logprob_more"])
        b.append(r["logprob_less"])
    metrics = {
        "overall": metrics_to_dict(crows_metric(more, less, n_boot=n_boot, seed=seed)),
        "by_bias_type": {
            t: metrics_to_dict(crows_metric(a, b, n_boot=n_boot, seed=seed)) for t, (a, b) in sorted(by_type.items())
        },
    }
    return BenchResult("crows", records, metrics)
