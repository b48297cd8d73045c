"""The printed table and the JSON records of ``tools/benchmark.py``."""

from __future__ import annotations

import math

from .timing import Timing, format_mib

__all__ = ["make_reporter"]


def make_reporter(header: str, results: list):
    def report(key, title, timings: dict[str, Timing], diffs: dict) -> None:
        names = list(timings)
        print(f"\n({key}) {title}  [{header}]")
        width = max(len(n) for n in names)
        for n in names:
            t = timings[n]
            saved = "" if t.saved is None else f"   saved for backward {format_mib(t.saved):>10}"
            print(
                f"  {n:<{width}}  {t.median:8.3f} s  (cpu {t.cpu_median:8.3f} s)"
                f"   peak {format_mib(t.peak):>10}{saved}"
            )
        first, last = timings[names[0]], timings[names[-1]]
        if key.startswith(("e/", "g/")):  # two settings of the project, not a reference
            meaning = f"time of {names[-1]} / time of {names[0]}"
            ratio, cpu_ratio = last.median / first.median, last.cpu_median / first.cpu_median
            print(
                f"  ratio {names[-1]} / {names[0]}: {ratio:.3f}x the time "
                f"(cpu time: {cpu_ratio:.3f}x)"
            )
        else:
            meaning = "time of reference / time of project (speed-up)"
            for other in names[1:-1]:  # (f) has several project rows; the last is the fastest
                t = timings[other]
                print(
                    f"  ratio {names[0]} / {other}: {first.median / t.median:.2f}x faster "
                    f"(cpu time: {first.cpu_median / t.cpu_median:.2f}x)"
                )
            ratio, cpu_ratio = first.median / last.median, first.cpu_median / last.cpu_median
            print(
                f"  ratio {names[0]} / {names[-1]}: {ratio:.2f}x faster "
                f"(cpu time: {cpu_ratio:.2f}x)"
            )
        for what, (diff, rel) in diffs.items():
            relative = "" if math.isnan(rel) else f" (relative to the tensor's max: {rel:.1e})"
            print(f"  max abs diff of {what}: {diff:.2e}{relative}")
        results.append(
            {
                "benchmark": key,
                "setting": header,
                "seconds": {n: timings[n].median for n in names},
                "peak_bytes": {n: timings[n].peak for n in names},
                "saved_bytes": {n: timings[n].saved for n in names},
                "ratio": ratio,
                "cpu_time_ratio": cpu_ratio,
                "ratio_is": meaning,
                "max_abs_diff": {w: d for w, (d, _) in diffs.items()},
                "max_rel_diff": {w: r for w, (_, r) in diffs.items()},
            }
        )

    return report
