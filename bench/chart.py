"""
Draws bench/results/results.png from results.json (run by bench/run.py in its
own venv with matplotlib).

    python chart.py results.json results.png
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# results.json may hold other targets (the byte relay, run for its added TTFT
# only): a panel shows the targets it names and ignores the rest.
TARGETS = ("direct", "pylon_ai", "pylon_ai_redis", "litellm", "portkey", "portkey_shim")
LABELS = {
    "direct": "direct",
    "relay": "byte relay\n(floor)",
    "pylon_ai": "pylon_ai",
    "pylon_ai_redis": "pylon_ai\n(Redis)",
    "litellm": "LiteLLM",
    "portkey": "Portkey",
    "portkey_shim": "Portkey\n(+shim)",
}
COLORS = {
    "direct": "#9e9e9e",
    "relay": "#cfcfcf",
    "pylon_ai": "#1f77b4",
    "pylon_ai_redis": "#6baed6",
    "litellm": "#d62728",
    "portkey": "#2ca02c",
    "portkey_shim": "#98df8a",
}


def value(res: dict[str, Any], key: str, target: str, path: str) -> float | None:
    v: Any = res.get(key, {}).get(target)
    for part in path.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None


PANELS = [
    (
        "streaming throughput, c=64\n(200 chunks, streams/s, log)",
        "b_c64",
        "rps",
        True,
        TARGETS,
    ),
    ("non-streaming, c=64\n(req/s, log)", "a_c64", "rps", True, TARGETS),
    (
        "added TTFT p50 at c=1 over direct (ms)\n(chunks 20 ms apart)",
        "b_c1",
        "added_ttft_ms.spaced.p50",
        False,
        ("relay", *TARGETS[1:]),
    ),
    ("1000 slow streams: TTFT p99 (ms)", "c_slow", "ttft_ms.p99", False, TARGETS),
    (
        "1000 slow streams: RSS per open stream (KiB)",
        "c_slow",
        "rss_per_stream_kib",
        False,
        TARGETS[1:],
    ),
    (
        "CPU µs per forwarded chunk\n(b, c=64; log)",
        "b_c64",
        "cpu_us_per_chunk",
        True,
        TARGETS[1:],
    ),
]


def main(src: str, dst: str) -> None:
    data = json.load(open(src))
    res = data["results"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (title, key, path, log, targets) in zip(axes.flat, PANELS, strict=True):
        names, vals, colors = [], [], []
        for t in targets:
            v = value(res, key, t, path)
            if v is None:
                continue
            names.append(LABELS[t])
            vals.append(v)
            colors.append(COLORS[t])
        ax.set_title(title, fontsize=10)
        if not vals:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            ax.set_axis_off()
            continue
        bars = ax.bar(names, vals, color=colors)
        if log and min(vals) > 0:
            ax.set_yscale("log")
        for bar, v in zip(bars, vals, strict=True):
            label = f"{v:.3g}" if v < 1000 else f"{v:.0f}"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.tick_params(axis="x", labelsize=9)
    meta = data["meta"]
    fig.suptitle(
        f"pylon_ai vs LiteLLM vs Portkey, one pinned core each — {meta['date']}"
        f" ({meta['mode']} run)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
