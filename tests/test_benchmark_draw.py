"""The DRAW benchmark's results file: one section per variant, the old flat layout carried over."""

import json

from benchmarks import draw as benchmark


def test_the_old_flat_result_becomes_the_no_attention_section(tmp_path):
    path = tmp_path / "draw.json"
    old = {"test_nll_bound_nats": 92.559, "config": {"attention": False}, "provenance": {"commit": "cf8c9e3"}}
    path.write_text(json.dumps(old))
    assert benchmark.read_results(path) == {"no_attention": old}
    assert benchmark.read_results(tmp_path / "missing.json") == {}


def test_a_variant_replaces_its_own_section_and_keeps_the_other():
    earlier = {"no_attention": {"test_nll_bound_nats": 92.559}, "provenance": {"commit": "old"}}
    report = {"test_nll_bound_nats": 89.1, "provenance": {"commit": "new"}}
    merged = benchmark.merge_variant(earlier, "attention", report)
    assert merged["attention"] == report and merged["no_attention"] == earlier["no_attention"]
    assert merged["provenance"] == {"commit": "new"}  # the file's latest write
    assert benchmark.merge_variant(merged, "attention", {**report, "test_nll_bound_nats": 88.0})["attention"][
        "test_nll_bound_nats"] == 88.0
    assert set(benchmark.VARIANTS) == set(benchmark.TARGETS) == {"attention", "no_attention"}
