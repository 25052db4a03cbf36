"""Every pipeline's export as a public TensorFlow Serving endpoint sees it.

For each pipeline's shared smoke export (tests/conftest.py), and every signature in it:
- it loads through the C++ server's path (TF1 session, ``serve`` tag, tensor names) and answers
  as ``tf.saved_model.load`` does, and ``saved_model_cli`` reports it as a predict signature;
- it answers as the serving function built on the run's reloaded ``model.keras`` does;
- a hostile request (over a limit, negative, NaN) fails at once with ``InvalidArgumentError``
  naming the input, its value and the limit, and the export then still answers;
- 8 threads x 25 calls give exactly the single-threaded answers (sampling with fixed seeds too).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from rnnapps.cli import cli
from rnnapps.export import read_metadata
from rnnapps.pipelines import get_pipeline
from tests.serving_checks import (
    PREDICT_METHOD,
    SessionModel,
    assert_same_answers,
    object_call,
    saved_model_cli_show,
)

PIPELINES = ("sentiment", "ner", "translate", "autoencoder", "textgen", "pixelrnn", "draw")
THREADS, CALLS_PER_THREAD = 8, 25
# A refused request must come back at once; the cap only guards against a hang or a huge allocation.
REFUSAL_SECONDS = 20.0


def _digits(count: int, channels: bool = False) -> np.ndarray:
    images = (np.random.default_rng(count).random((count, 28, 28)) < 0.3).astype(np.uint8)
    return images[..., None] if channels else images


def _almost_known_mask(count: int) -> np.ndarray:
    # Three unknown pixels: inpainting then costs three forward passes, not 784.
    mask = np.ones((count, 28, 28), np.uint8)
    mask[:, 27, 25:] = 0
    return mask


TEXTS = ["A wonderful, moving film.", "", "Zwei Hunde spielen im Schnee.", "Ça alors 🎬"]
PROMPTS = dict(prompt=["ROMEO:", ""], length=[12, 5], temperature=[0.8, 0.0], seed=[1, 2])

#: One ordinary request for every signature of every export.
REQUESTS = {
    "sentiment": {name: dict(text=TEXTS) for name in ("serving_default", "serving_keras", "serving_xla", "explain")},
    "ner": {
        "serving_default": dict(tokens=[["EU", "rejects", "German", "call"], ["Peter", "Blackburn", "", ""]]),
        "tag_text": dict(text=["EU rejects German call to boycott British lamb .", ""]),
        "n_best": dict(text=["EU rejects German call to boycott British lamb .", ""], k=3),
    },
    "translate": {name: dict(text=TEXTS) for name in ("serving_default", "translate_with_attention",
                                                      "translate_greedy", "translate_n_best")},
    "autoencoder": {
        **{name: dict(text=TEXTS) for name in ("serving_default", "encode", "reconstruct")},
        "vocabulary": {},
    },
    "textgen": {
        "serving_default": PROMPTS,
        "generate": PROMPTS,
        "generate_top_k": dict(PROMPTS, top_k=[3, 0]),
    },
    "pixelrnn": {
        **{name: dict(images=_digits(2), mask=_almost_known_mask(2), seed=3) for name in ("serving_default", "inpaint")},
        **{name: dict(images=_digits(3)) for name in ("log_prob", "log_likelihood")},
        "sample": dict(num=1, seed=5),
    },
    "draw": {
        **{name: dict(num=2, seed=1) for name in ("serving_default", "generate")},
        "reconstruct": dict(images=_digits(2, channels=True)),
    },
}

#: (pipeline, signature, what changes from the ordinary request, what the error must say)
HOSTILE = [
    ("sentiment", "serving_default", dict(text=["fine"] * 1025), "text: a batch of 1025 is over max_request_batch=1024"),
    ("sentiment", "serving_default", dict(text=["a" * 100_001]), "text: a string of 100001 bytes is over max_text_bytes=100000"),
    ("sentiment", "serving_keras", dict(text=["fine"] * 1025), "text: a batch of 1025 is over max_request_batch=1024"),
    ("sentiment", "serving_keras", dict(text=["a" * 100_001]), "max_text_bytes=100000"),
    ("sentiment", "serving_xla", dict(text=["fine"] * 1025), "text: a batch of 1025 is over max_request_batch=1024"),
    ("sentiment", "serving_xla", dict(text=["a" * 100_001]), "max_text_bytes=100000"),
    ("sentiment", "explain", dict(text=["fine"] * 33), "text: a batch of 33 is over max_explain_batch=32"),
    ("sentiment", "explain", dict(text=["a" * 100_001]), "max_text_bytes=100000"),
    ("ner", "serving_default", dict(tokens=[["EU"] * 1001]), "tokens: 1001 tokens in a sentence is over max_sentence_tokens=1000"),
    ("ner", "serving_default", dict(tokens=[["EU"]] * 1025), "tokens: a batch of 1025 is over max_request_batch=1024"),
    ("ner", "tag_text", dict(text=["EU " * 1001]), "text: 1001 tokens in a sentence is over max_sentence_tokens=1000"),
    ("ner", "tag_text", dict(text=["x" * 20_001]), "text: a string of 20001 bytes is over max_text_bytes=20000"),
    ("ner", "tag_text", dict(text=["EU"] * 1025), "text: a batch of 1025 is over max_request_batch=1024"),
    ("ner", "n_best", dict(k=9), "k=9 is over max_n_best=8"),
    ("ner", "n_best", dict(k=0), "k=0 is below 1; it must be in [1, 8]"),
    ("ner", "n_best", dict(text=["EU"] * 1025), "text: a batch of 1025 is over max_request_batch=1024"),
    ("ner", "n_best", dict(text=["EU " * 1001]), "max_sentence_tokens=1000"),
    ("translate", "serving_default", dict(text=["Ein Mann."] * 257), "text: a batch of 257 is over max_request_batch=256"),
    ("translate", "translate_with_attention", dict(text=["x" * 20_001]), "max_text_bytes=20000"),
    ("translate", "translate_greedy", dict(text=["Ein Mann."] * 257), "max_request_batch=256"),
    ("translate", "translate_n_best", dict(text=["Ein Mann."] * 257), "max_request_batch=256"),
    ("translate", "translate_n_best", dict(text=["x" * 20_001]), "max_text_bytes=20000"),
    ("autoencoder", "encode", dict(text=["a film"] * 257), "text: a batch of 257 is over max_request_batch=256"),
    ("autoencoder", "reconstruct", dict(text=["a" * 100_001]), "max_text_bytes=100000"),
    ("autoencoder", "serving_default", dict(text=["a film"] * 257), "max_request_batch=256"),
    ("textgen", "generate", dict(length=[2**31 - 1, 5]), "length=2147483647 is over max_generate_length=5000"),
    ("textgen", "generate", dict(length=[10**8, 5]), "length=100000000 is over max_generate_length=5000"),
    ("textgen", "serving_default", dict(length=[-1, 5]), "length=-1 is negative"),
    ("textgen", "generate", dict(temperature=[float("nan"), 1.0]), "temperature=nan must be a finite number >= 0"),
    ("textgen", "generate", dict(temperature=[-0.5, 1.0]), "temperature=-0.5 must be a finite number >= 0"),
    ("textgen", "generate", dict(temperature=[float("inf"), 1.0]), "temperature=inf must be a finite number >= 0"),
    ("textgen", "generate_top_k", dict(top_k=[-1, 0]), "top_k=-1 is negative"),
    ("textgen", "generate_top_k", dict(top_k=[10**6, 0]), "top_k=1000000 is over vocabulary_size="),
    ("textgen", "generate", dict(prompt=["x" * 10**6, ""]), "prompt: a string of 1000000 characters is over max_prompt_length=5000"),
    ("textgen", "generate", dict(prompt=["x"] * 17, length=[1], temperature=[1.0], seed=[0]),
     "prompt: a batch of 17 is over max_request_batch=16"),
    ("pixelrnn", "sample", dict(num=10**6), "num=1000000 is over max_samples=64"),
    ("pixelrnn", "sample", dict(num=-1), "num=-1 is negative"),
    ("pixelrnn", "inpaint", dict(images=_digits(65), mask=_almost_known_mask(65)), "images: a batch of 65 is over max_samples=64"),
    ("pixelrnn", "serving_default", dict(images=_digits(65), mask=_almost_known_mask(65)), "max_samples=64"),
    ("pixelrnn", "log_prob", dict(images=_digits(1025)), "images: a batch of 1025 is over max_request_batch=1024"),
    ("pixelrnn", "log_likelihood", dict(images=_digits(1025)), "max_request_batch=1024"),
    ("draw", "generate", dict(num=10**6), "num=1000000 is over max_samples=256"),
    ("draw", "serving_default", dict(num=-3), "num=-3 is negative"),
    ("draw", "reconstruct", dict(images=_digits(1025, channels=True)), "images: a batch of 1025 is over max_request_batch=1024"),
]


@pytest.fixture(scope="module")
def served(canonical_run):
    """``served(pipeline) -> (SmokeRun, SessionModel, tf.saved_model.load object)``, each loaded once."""
    cache = {}

    def get(pipeline):
        if pipeline not in cache:
            run = canonical_run(pipeline)
            cache[pipeline] = (run, SessionModel(run.export), tf.saved_model.load(str(run.export)))
        return cache[pipeline]

    yield get
    for _, session_model, _ in cache.values():
        session_model.close()


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_c_plus_plus_loader_path_answers_like_the_python_loader(pipeline, served):
    run, session_model, loaded = served(pipeline)
    assert set(session_model.signatures) == set(REQUESTS[pipeline]) == set(loaded.signatures), (
        "every signature of the export has an ordinary request here"
    )
    for signature, request in REQUESTS[pipeline].items():
        assert session_model.signatures[signature].method_name == PREDICT_METHOD, signature
        assert_same_answers(session_model(signature, **request), object_call(loaded, signature, **request))


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_signature_answers_as_the_model_keras_it_came_from(pipeline, served):
    import keras

    run, _, loaded = served(pipeline)
    # The run's model.keras, reloaded, and the same serving functions built on it in Python: what
    # the SavedModel serialised must not have changed a single answer.
    model = keras.saving.load_model(run.result.run_dir / "model.keras")
    endpoints = get_pipeline(pipeline).serving(model, run.result.config)
    assert set(endpoints) == set(REQUESTS[pipeline])
    for signature, request in REQUESTS[pipeline].items():
        specs = loaded.signatures[signature].structured_input_signature[1]
        tensors = {name: tf.constant(value, dtype=specs[name].dtype) for name, value in request.items()}
        # Traced, as the export was: an eager call would run a sampler's graph loop step by step in Python.
        function = tf.function(endpoints[signature].function)
        answer = {name: np.asarray(value) for name, value in function(**tensors).items()}
        assert_same_answers(object_call(loaded, signature, **request), answer, atol=1e-4)


def test_saved_model_cli_reports_every_signature_as_predict(served):
    exports = {pipeline: served(pipeline) for pipeline in PIPELINES}
    # One saved_model_cli process per export, side by side: each spends seconds importing TensorFlow.
    with ThreadPoolExecutor(len(exports)) as pool:
        shown = dict(zip(exports, pool.map(lambda item: saved_model_cli_show(item[0].export), exports.values()),
                         strict=True))
    for pipeline, (_, session_model, _) in exports.items():
        for signature in session_model.signatures:
            block = shown[pipeline].split(f"signature_def['{signature}']:")[1].split("signature_def[")[0]
            assert f"Method name is: {PREDICT_METHOD}" in block, (pipeline, signature)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_export_records_its_request_limits(pipeline, served):
    run, _, _ = served(pipeline)
    limits = read_metadata(run.export)["request_limits"]
    assert limits == get_pipeline(pipeline).request_limits(run.result.config)
    assert "max_request_batch" in limits and all(isinstance(value, int) and value > 0 for value in limits.values())


@pytest.mark.parametrize(("pipeline", "signature", "change", "message"), HOSTILE,
                         ids=[f"{p}-{s}-{m.split('=')[0].split(': ')[-1]}" for p, s, _, m in HOSTILE])
def test_a_hostile_request_is_refused_at_once_and_the_export_still_answers(pipeline, signature, change, message,
                                                                          served):
    _, session_model, loaded = served(pipeline)
    ordinary = REQUESTS[pipeline][signature]
    hostile = {**ordinary, **change}
    for call in (lambda **inputs: session_model(signature, **inputs),
                 lambda **inputs: object_call(loaded, signature, **inputs)):
        started = time.perf_counter()
        with pytest.raises(tf.errors.InvalidArgumentError, match="request refused") as refused:
            call(**hostile)
        assert time.perf_counter() - started < REFUSAL_SECONDS
        assert message in str(refused.value), str(refused.value)[-500:]
        answer = call(**ordinary)
        assert answer and all(np.asarray(value).size >= 0 for value in answer.values())


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_eight_threads_get_the_single_threaded_answers(pipeline, served):
    _, session_model, loaded = served(pipeline)
    # PixelRNN's sample visits all 784 pixels a call; inpaint runs the same sampler (seeded) on three.
    requests = [(name, request) for name, request in REQUESTS[pipeline].items()
                if (pipeline, name) != ("pixelrnn", "sample")]
    for call in (session_model, lambda signature, **inputs: object_call(loaded, signature, **inputs)):
        expected = [call(signature, **request) for signature, request in requests]

        def worker(thread: int, call=call):
            answers = []
            for index in range(CALLS_PER_THREAD):
                which = (thread + index) % len(requests)
                signature, request = requests[which]
                answers.append((which, call(signature, **request)))
            return answers

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(worker, range(THREADS)))
        assert sum(len(answers) for answers in results) == THREADS * CALLS_PER_THREAD
        for answers in results:
            for which, answer in answers:
                assert_same_answers(answer, expected[which], atol=0.0)


def test_xla_batches_are_padded_to_a_bounded_set_of_buckets():
    from rnnapps.models.classifier import xla_batch_buckets

    assert xla_batch_buckets(1024) == [2**k for k in range(11)]
    assert xla_batch_buckets(1000)[-1] == 1024 and xla_batch_buckets(1) == [1]


def test_predict_verbs_share_the_limits(served, tmp_path):
    runner = CliRunner()
    textgen, _, _ = served("textgen")
    too_long = runner.invoke(cli, ["predict", "textgen", "--model", str(textgen.export), "--length", "5001"])
    assert too_long.exit_code == 2 and "5000" in too_long.output
    too_long_prompt = runner.invoke(
        cli, ["predict", "textgen", "--model", str(textgen.export), "--seed", "1", "--prompt", "x" * 5001]
    )
    assert too_long_prompt.exit_code == 2 and "max_prompt_length=5000" in too_long_prompt.output
    nan = runner.invoke(cli, ["predict", "textgen", "--model", str(textgen.export), "--temperature", "nan"])
    assert nan.exit_code == 2 and "finite" in nan.output
    draw, _, _ = served("draw")
    too_many = runner.invoke(cli, ["predict", "draw", "--model", str(draw.export), "--samples", "257",
                                   "--output", str(tmp_path)])
    assert too_many.exit_code == 2 and "256" in too_many.output
    sentiment, _, _ = served("sentiment")
    huge = runner.invoke(cli, ["predict", "sentiment", "--model", str(sentiment.export), "a" * 100_001])
    assert huge.exit_code == 2 and "max_text_bytes=100000" in huge.output
    # More texts than one request may carry are sent as several requests.
    many = runner.invoke(cli, ["predict", "sentiment", "--model", str(sentiment.export)],
                         input="".join(f"review {index}\n" for index in range(1030)))
    assert many.exit_code == 0, many.output
    assert len(many.output.strip().splitlines()) == 1030


# --- the requests in docs/serving.md ----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
SNIPPET = re.compile(r"<!-- request: (rest|grpc) (\w+) -->\s*```python\n(.*?)```", re.S)


def _documented_requests() -> dict[tuple[str, str], str]:
    return {(kind, pipeline): code for kind, pipeline, code in SNIPPET.findall(DOCS.read_text(encoding="utf-8"))}


def _run_snippet(code: str) -> dict:
    from tensorflow_serving.apis import predict_pb2

    namespace = {"json": json, "np": np, "tf": tf, "predict_pb2": predict_pb2}
    exec(code, namespace)  # noqa: S102 - the docs' own example code
    return namespace


def _check_inputs_match_the_signature(inputs: dict, session_model: SessionModel) -> None:
    specs = session_model.input_specs("serving_default")
    assert set(inputs) == set(specs), f"documented inputs {sorted(inputs)} != the export's {sorted(specs)}"
    for name, (dtype, shape) in specs.items():
        value = np.asarray(inputs[name], dtype=dtype.as_numpy_dtype)
        if shape is not None:
            assert value.ndim == len(shape), f"{name}: rank {value.ndim}, the signature takes {shape}"
            for got, want in zip(value.shape, shape, strict=True):
                assert want in (-1, got), f"{name}: shape {value.shape}, the signature takes {shape}"


def test_the_docs_show_a_rest_and_a_grpc_request_for_every_pipeline():
    assert set(_documented_requests()) == {(kind, pipeline) for kind in ("rest", "grpc") for pipeline in PIPELINES}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_documented_rest_body_is_answered_by_the_export(pipeline, served):
    _, session_model, _ = served(pipeline)
    body = json.loads(json.dumps(_run_snippet(_documented_requests()[("rest", pipeline)])["body"]))
    assert body["signature_name"] == "serving_default"
    _check_inputs_match_the_signature(body["inputs"], session_model)
    answer = session_model("serving_default", **body["inputs"])
    assert set(answer) == set(session_model.signatures["serving_default"].outputs)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_documented_grpc_request_is_answered_by_the_export(pipeline, served):
    _, session_model, _ = served(pipeline)
    request = _run_snippet(_documented_requests()[("grpc", pipeline)])["request"]
    assert (request.model_spec.name, request.model_spec.signature_name) == (pipeline, "serving_default")
    specs = session_model.input_specs("serving_default")
    for name, proto in request.inputs.items():
        assert name in specs and tf.as_dtype(proto.dtype) == specs[name][0], (name, proto.dtype)
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    _check_inputs_match_the_signature(inputs, session_model)
    answer = session_model("serving_default", **inputs)
    assert set(answer) == set(session_model.signatures["serving_default"].outputs)


def test_translate_n_best_starts_with_the_served_translation_and_is_best_first(served):
    run, session_model, loaded = served("translate")
    beam_width = run.result.config.beam_width
    every = session_model("translate_n_best", text=TEXTS)
    assert every["translations"].shape == every["scores"].shape == (len(TEXTS), beam_width)
    np.testing.assert_array_equal(every["translations"][:, 0], session_model("serving_default", text=TEXTS)["translation"])
    assert (np.diff(every["scores"], axis=1) <= 1e-6).all()
    printed = CliRunner().invoke(cli, ["predict", "translate", "--model", str(run.export), "--n-best", str(beam_width),
                                       *TEXTS[:2]])
    assert printed.exit_code == 0, printed.output
    blocks = printed.output.strip("\n").split("\n\n")
    assert len(blocks) == 2 and all(len(block.splitlines()) == beam_width for block in blocks)
    first = blocks[0].splitlines()[0].split("\t")
    assert first[0] == "1" and first[2] == every["translations"][0, 0].decode()
    too_many = CliRunner().invoke(cli, ["predict", "translate", "--model", str(run.export),
                                        "--n-best", str(beam_width + 1), "Ein Mann."])
    assert too_many.exit_code == 2 and f"beam_width={beam_width}" in too_many.output


# --- sentiment explain ------------------------------------------------------------------------

def test_explain_attributions_add_up_to_the_logit_over_the_baseline(served):
    run, session_model, _ = served("sentiment")
    reviews = ["the film was wonderful and the plot superb", "awful , boring and dull", "", "zzzz qqqq the"]
    explained = session_model("explain", text=reviews)
    served_probability = session_model("serving_default", text=reviews)["probability"]
    np.testing.assert_allclose(explained["probability"], served_probability, atol=1e-5)
    difference = explained["logit"] - explained["baseline_logit"]
    totals = explained["attributions"].sum(axis=1)
    # A midpoint sum of explain_steps points: exact in the limit, within a few percent here.
    np.testing.assert_allclose(totals, difference, atol=1e-3, rtol=0.05)
    assert np.abs(difference).max() > 0.1, "the reviews barely move the model: the check above would be vacuous"
    assert explained["tokens"].shape == explained["attributions"].shape
    assert (explained["attributions"][explained["tokens"] == b""] == 0).all()
    assert run.result.config.explain_steps == read_metadata(run.export)["config"]["explain_steps"]


def test_the_decisive_word_gets_the_largest_attribution(served):
    _, session_model, _ = served("sentiment")
    # In the fixture these words appear only in reviews of one label (tests/fixtures/make_imdb_fixture.py).
    explained = session_model("explain", text=["the film was wonderful and the plot was a story",
                                              "the film was dreadful and the plot was a story"])
    tokens = explained["tokens"].astype(str)
    for row, word, pick in ((0, "wonderful", np.argmax), (1, "dreadful", np.argmin)):
        assert tokens[row, pick(explained["attributions"][row])] == word, (tokens[row], explained["attributions"][row])


def test_predict_explain_prints_words_with_their_attributions(served, tmp_path):
    run, _, _ = served("sentiment")
    page = tmp_path / "why.html"
    picture = tmp_path / "why.png"
    printed = CliRunner().invoke(cli, ["predict", "sentiment", "--model", str(run.export), "--explain", "--html",
                                       str(page), "--png", str(picture), "the film was wonderful"])
    assert printed.exit_code == 0, printed.output
    line = printed.output.splitlines()[0]
    label, probability, words = line.split("\t")
    assert label in ("positive", "negative") and 0 <= float(probability) <= 1
    assert re.fullmatch(r"(\S+\([+-]\d+\.\d\d\) ?)+", words) and "wonderful(" in words
    assert "<span" in page.read_text() and "wonderful" in page.read_text()
    assert picture.read_bytes()[:4] == b"\x89PNG"
    refused = CliRunner().invoke(cli, ["predict", "sentiment", "--model", str(run.export), "--html", str(page), "x"])
    assert refused.exit_code == 2 and "--explain" in refused.output
