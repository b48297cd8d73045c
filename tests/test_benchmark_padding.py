"""Benchmark (g) of tools/benchmark.py: each setting pads as it says, and both are timed."""

import pytest

from dyhead_d2.benchmark.runner import main as benchmark_main

from . import needs_detectron2


@pytest.mark.slow
def test_padding_benchmark_pads_as_configured(capsys):
    needs_detectron2()
    argv = "--which g --detector-size 100x150 --repeats 1 --warmup 0 --device cpu"
    results = benchmark_main(argv.split())
    text = capsys.readouterr().out
    # 100x150 padded up to multiples of 32 and of 128, by hand.
    assert "pad 32 -> 128x160, pad 128 -> 128x256" in text, text
    by_key = {r["benchmark"]: r for r in results}
    assert set(by_key) == {"g/inference", "g/train"}, text
    for record in by_key.values():
        seconds = record["seconds"]
        assert list(seconds) == ["pad 32", "pad 128"] and min(seconds.values()) > 0
        assert record["ratio"] == pytest.approx(seconds["pad 128"] / seconds["pad 32"])
        assert "time of pad 128 / time of pad 32" == record["ratio_is"]
