"""The PNG timeline: requests/s, failures and mapped model errors, p95, hit ratio and cache tiers; phases shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: reports are written by headless runs and CI

import matplotlib.pyplot as plt

from loadtest.analysis import in_windows, model_windows
from loadtest.plan import Phase
from loadtest.recorder import percentile

PHASE_COLOURS = {
    "warm": "#e8f4e8",
    "model-down": "#f6d5c8",
    "model-slow": "#f9e4c8",
    "model-429": "#f3d9ec",
    "model-back": "#eef0d8",
    "redis-down": "#fbe3e3",
    "redis-back": "#fff4d6",
    "replica-down": "#e6e6fa",
    "recovered": "#e3f0fb",
    "run": "#f4f4f4",
}
TIER_COLOURS = {"memory": "#4c72b0", "redis": "#dd8452", "none": "#c44e52"}


def _shade(axes: list[Any], phases: list[Phase], t0: float, label_ax: Any) -> None:
    for i, ph in enumerate(phases):
        colour = PHASE_COLOURS.get(ph.name, "#f0f0f0" if i % 2 else "#ffffff")
        for ax in axes:
            ax.axvspan(ph.start - t0, ph.end - t0, color=colour, zorder=0)
            if i:
                ax.axvline(ph.start - t0, color="#555555", linewidth=0.8, linestyle=":", zorder=1)
        label_ax.text(
            (ph.start + ph.end) / 2 - t0,
            1.02 + 0.09 * (i % 2),  # alternate heights: short neighbouring phases keep readable labels
            ph.name,
            transform=label_ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
        )


def plot_timeline(
    timeline: dict[str, Any],
    phases: list[Phase],
    path: Path,
    *,
    title: str,
    p95_bound_ms: float | None = None,
    warm_hit_level: float | None = None,
    subtitle: str = "",
) -> None:
    """Write a four-panel PNG to `path` (x axis: seconds since the load started)."""
    t0 = float(timeline["started_at"])
    # Whole seconds only: the partial first and last buckets would draw as false dips in every rate.
    stop = float(timeline.get("stopped_at") or t0 + 1e9)
    secs = [s for s in timeline["seconds"] if s["t"] >= t0 - 0.1 and s["t"] + 1 <= stop + 0.1] or timeline["seconds"]
    xs = [s["t"] + 0.5 - t0 for s in secs]
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(13, 10), constrained_layout=True)
    ax_rps, ax_p95, ax_hit, ax_tier = axes
    _shade(list(axes), phases, t0, ax_rps)

    ax_rps.plot(xs, [s["requests"] for s in secs], color="#2b6cb0", label="requests/s")
    # A mapped model error on a cold key is expected in the model phases and a failure anywhere else.
    windows = model_windows(phases)
    in_model = [in_windows(s["t"], windows) for s in secs]
    mapped = [sum(s.get("mapped", {}).values()) for s in secs]
    failed = [s["failures"] + (0 if m else n) for s, m, n in zip(secs, in_model, mapped, strict=True)]
    expected = [n if m else 0 for m, n in zip(in_model, mapped, strict=True)]
    ax_rps.bar(xs, failed, width=0.9, color="#d62728", label="failures/s", zorder=3)
    ax_rps.bar(xs, expected, width=0.9, bottom=failed, color="#ed8936", label="mapped model errors/s (cold)", zorder=3)
    ax_rps.set_ylabel("per second")
    ax_rps.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

    # A rolling window: a single second without a miss would otherwise show as a deep, meaningless dip.
    rolling = [
        percentile([x for s in secs[max(0, i - 4) : i + 1] for x in s["latencies_ms"]], 95) for i in range(len(secs))
    ]
    ax_p95.plot(xs, rolling, color="#6b46c1", label="p95 latency (rolling 5 s)")
    if p95_bound_ms is not None:
        ax_p95.axhline(p95_bound_ms, color="#d62728", linestyle="--", linewidth=1, label="p95 bound")
    ax_p95.set_ylabel("ms")
    ax_p95.set_ylim(bottom=0)
    ax_p95.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

    ratios, cross = [], []
    for s in secs:
        cached = s["cache"].get("HIT", 0) + s["cache"].get("MISS", 0) + s["cache"].get("PARTIAL", 0)
        ratios.append(s["cache"].get("HIT", 0) / cached if cached else None)
        cross.append(s["cross_instance_hits"] / cached if cached else None)
    ax_hit.plot(xs, ratios, color="#2f855a", label="hit ratio")
    ax_hit.plot(xs, cross, color="#b7791f", linewidth=1, label="cross-instance hits (share of answers)")
    if warm_hit_level is not None:
        ax_hit.axhline(warm_hit_level, color="#2f855a", linestyle="--", linewidth=1, label="warm level")
    ax_hit.set_ylim(0, 1.05)
    ax_hit.set_ylabel("ratio")
    ax_hit.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

    bottom = [0.0] * len(secs)
    for tier, colour in TIER_COLOURS.items():
        vals = [float(s["tiers"].get(tier, 0)) for s in secs]
        label = "upstream (no tier)" if tier == "none" else f"{tier} tier"
        ax_tier.bar(xs, vals, width=1.0, bottom=bottom, color=colour, label=label, zorder=2)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax_tier.set_ylabel("responses/s by tier")
    ax_tier.set_xlabel("seconds since the load started")
    ax_tier.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
