"""Local SageMaker hosting: InvokeEndpoint latency and throughput, dynamic batching on vs off.

The whole local path is measured, as a caller sees it: boto3's ``sagemaker-runtime`` client →
the runtime server → routing → ``code/inference.py`` → the SavedModel, and back. Both tiny
tweet generators (the ``tiny`` preset, trained for one epoch on the shared tweets, artifacts
cached under ``benchmarks/out/host_latency``) are served by one moto-backed endpoint without
batching and by a second whose models set ``SAGEMAKER_TFS_ENABLE_BATCHING=true`` (max batch 16,
2 ms timeout, 2 batch threads). The clients run in a separate process (so their Python does not
compete with the server's for the GIL), with ``TargetVariant`` picking the model; concurrency
1, 8 and 16 closed-loop callers, each cell after a warm-up.

Every request is the DESIGN's request shape with the same prompt and a fixed seed (one with
which both tiny models generate close to the 32 tokens asked for), so that the batcher *can*
merge them (its rule needs equal scalar inputs and equal prompt lengths); requests with their
own random seeds are never merged, which one extra cell shows.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_DATA,
    OUT_DIR,
    SAMPLE_20K,
    BenchResult,
    Row,
    base_parser,
    ensure_project_importable,
    finish,
    make_row,
    progress,
)

NAME = "host_latency"
MODELS = ("lstm", "gpt2")
CONCURRENCY = (1, 8, 16)
REGION = "us-east-1"
BUCKET = "bench-artifacts"
ROLE = "arn:aws:iam::123456789012:role/bench"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.16-cpu"
BATCHING_ENV = {
    "SAGEMAKER_TFS_ENABLE_BATCHING": "true",
    "SAGEMAKER_TFS_MAX_BATCH_SIZE": "16",
    "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "2000",
    "SAGEMAKER_TFS_NUM_BATCH_THREADS": "2",
}
REQUEST: dict[str, Any] = {
    "inputs": "i love",
    "parameters": {"max_new_tokens": 32, "temperature": 0.8, "top_k": 40, "seed": 1},
}
TRAIN_TWEETS = 2000


def log(message: str) -> None:
    progress(NAME, message)


def tiny_artifacts(data: Path, seed: int) -> dict[str, Path]:
    """Both tiny models, trained once and reused while the model-building code is unchanged."""
    ensure_project_importable()
    import tweetgen_build
    from tweetgen_build.data import CleaningOptions
    from tweetgen_build.pipeline import ModelKind, TrainOptions, prepare_data, run_training
    from tweetgen_build.tokenizer import train_tokenizer
    from tweetgen_build.training import TrainSettings

    code = hashlib.sha256()
    for source in sorted(Path(tweetgen_build.__file__).parent.rglob("*.py")):
        code.update(source.read_bytes())
    code.update(f"{TRAIN_TWEETS}-{seed}".encode())
    key = code.hexdigest()
    root = OUT_DIR / NAME
    paths = {model: root / model / "model.tar.gz" for model in MODELS}
    key_file = root / "cache-key"
    if (
        key_file.is_file()
        and key_file.read_text() == key
        and all(p.is_file() for p in paths.values())
    ):
        log(f"reusing the tiny artifacts in {root}")
        return paths
    log(f"training both tiny models on {TRAIN_TWEETS:,} tweets (one epoch each)")
    root.mkdir(parents=True, exist_ok=True)
    sample = [data / SAMPLE_20K]
    splits, _ = prepare_data(sample, CleaningOptions(), TRAIN_TWEETS, lambda _: None)
    tokenizer = train_tokenizer(splits.train, vocab_size=800)
    tokenizer.save(str(root / "tokenizer.json"))
    kinds: tuple[ModelKind, ...] = ("lstm", "gpt2")
    for model in kinds:
        result = run_training(
            TrainOptions(
                model=model,
                data=sample,
                out=root / model,
                preset="tiny",
                settings=TrainSettings(epochs=1, batch_size=32, sequence_length=32, seed=seed),
                max_tweets=TRAIN_TWEETS,
                tokenizer=root / "tokenizer.json",
                samples=8,
            ),
            log=lambda _: None,
        )
        paths[model] = result.artifact
    key_file.write_text(key)
    return paths


def drive(
    url: str,
    endpoint: str,
    variant: str,
    concurrency: int,
    seconds: float,
    warmup: int,
    random_seeds: bool,
) -> list[float]:
    """Closed-loop callers (run in the client process): each call's latency in seconds."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "sagemaker-runtime",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=concurrency + 4, retries={"max_attempts": 1}),
    )
    rng = random.Random(concurrency)

    def body() -> bytes:
        request = json.loads(json.dumps(REQUEST))
        if random_seeds:
            request["parameters"]["seed"] = rng.randrange(2**40)
        return json.dumps(request).encode()

    def call() -> None:
        answer = client.invoke_endpoint(
            EndpointName=endpoint,
            TargetVariant=variant,
            Body=body(),
            ContentType="application/json",
        )
        answer["Body"].read()

    for _ in range(warmup):
        call()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    barrier = threading.Barrier(concurrency)

    def worker() -> None:
        barrier.wait()
        mine: list[float] = []
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _Stack:
    """moto (control plane + S3), the local hosting service and the runtime server."""

    def __init__(self, artifacts: dict[str, Path], cache: Path) -> None:
        import boto3
        from moto import mock_aws
        from tweetgen_local.hosting import LocalHosting
        from tweetgen_local.runtime import RuntimeServer

        self._mock = mock_aws()
        self._mock.start()
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        configs: dict[str, list[dict[str, Any]]] = {"plain": [], "batched": []}
        for model, archive in artifacts.items():
            key = f"models/{model}/bench/model.tar.gz"
            s3.upload_file(str(archive), BUCKET, key)
            for endpoint, environment in (("plain", {}), ("batched", BATCHING_ENV)):
                name = f"{model}-{endpoint}"
                sagemaker.create_model(
                    ModelName=name,
                    PrimaryContainer={
                        "Image": IMAGE,
                        "ModelDataUrl": f"s3://{BUCKET}/{key}",
                        "Environment": environment,
                    },
                    ExecutionRoleArn=ROLE,
                )
                configs[endpoint].append(
                    {
                        "VariantName": model,
                        "ModelName": name,
                        "InitialVariantWeight": 1.0,
                        "InitialInstanceCount": 1,
                        "InstanceType": "ml.m5.large",
                    }
                )
        self.hosting = LocalHosting(sagemaker, s3, cache)
        for endpoint, variants in configs.items():
            sagemaker.create_endpoint_config(
                EndpointConfigName=endpoint, ProductionVariants=variants
            )
            error = self.hosting.prepare(endpoint)
            if error:
                raise RuntimeError(error)
            sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
        self.hosting.start()
        self.server = RuntimeServer(self.hosting).start()

    def generated_tokens(self, variant: str, tokenizer: Path) -> int:
        """New tokens one benchmark request produces (generation stops at end-of-text)."""
        from tokenizers import Tokenizer

        answer = self.hosting.invoke(
            "plain",
            json.dumps(REQUEST).encode(),
            content_type="application/json",
            target_variant=variant,
        )
        text = json.loads(answer.invocation.body)[0]["generated_text"]
        return len(Tokenizer.from_file(str(tokenizer)).encode(text).ids)

    def batch_stats(self, variant: str) -> dict[str, int]:
        stats = self.hosting.status()["endpoints"]["batched"]["variants"][variant]["batching"]
        return dict(stats)

    def close(self) -> None:
        self.server.close()
        self.hosting.close()
        self._mock.stop()


def _cell(
    pool: ProcessPoolExecutor,
    stack: _Stack,
    endpoint: str,
    model: str,
    concurrency: int,
    seconds: float,
    random_seeds: bool = False,
) -> dict[str, Any]:
    before = stack.batch_stats(model) if endpoint == "batched" else None
    latencies = pool.submit(
        drive, stack.server.url, endpoint, model, concurrency, seconds, 3, random_seeds
    ).result()
    cell: dict[str, Any] = {
        "requests": len(latencies),
        "p50_ms": _percentile(latencies, 0.5) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "rps": len(latencies) / seconds,
    }
    if before is not None:
        after = stack.batch_stats(model)
        calls = after["calls"] - before["calls"]
        handled = after["requests"] - before["requests"]
        cell["savedmodel_calls"] = calls
        cell["merged_fraction"] = (after["merged_requests"] - before["merged_requests"]) / max(
            handled, 1
        )
        cell["mean_requests_per_call"] = handled / max(calls, 1)
    return cell


def run(
    quick: bool = False, data: Path = DEFAULT_DATA, seed: int = 7, seconds: float | None = None
) -> BenchResult:
    started = time.perf_counter()
    ensure_project_importable()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    artifacts = tiny_artifacts(data, seed)
    cell_seconds = seconds if seconds is not None else (2.0 if quick else 5.0)
    rows: list[Row] = []
    details: dict[str, Any] = {"cell_seconds": cell_seconds, "batching": BATCHING_ENV}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tweetgen-host-") as tmp:
        log("starting moto, the local hosting service and the runtime server")
        stack = _Stack(artifacts, Path(tmp) / "cache")
        tokenizer = OUT_DIR / NAME / "tokenizer.json"
        details["generated_tokens"] = {m: stack.generated_tokens(m, tokenizer) for m in MODELS}
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                for model in MODELS:
                    label = "LSTM" if model == "lstm" else "GPT-2"
                    for concurrency in CONCURRENCY:
                        off = _cell(pool, stack, "plain", model, concurrency, cell_seconds)
                        on = _cell(pool, stack, "batched", model, concurrency, cell_seconds)
                        details[f"{model}-c{concurrency}"] = {"off": off, "on": on}
                        log(
                            f"{label} c={concurrency}: off p50 {off['p50_ms']:.1f} ms p99"
                            f" {off['p99_ms']:.1f} ms {off['rps']:.1f} req/s | on p50"
                            f" {on['p50_ms']:.1f} ms p99 {on['p99_ms']:.1f} ms {on['rps']:.1f}"
                            f" req/s, {on['mean_requests_per_call']:.1f} requests per call"
                        )
                        figure = f"{label}, concurrency {concurrency}"
                        rows.append(
                            make_row(
                                NAME,
                                f"{figure}, requests/s",
                                on["rps"],
                                "req/s",
                                off["rps"],
                                "batching off",
                                higher_is_better=True,
                            )
                        )
                        for stat in ("p50", "p99"):
                            rows.append(
                                make_row(
                                    NAME,
                                    f"{figure}, {stat} latency",
                                    on[f"{stat}_ms"],
                                    "ms",
                                    off[f"{stat}_ms"],
                                    "batching off",
                                    higher_is_better=False,
                                )
                            )
                random_seeds = _cell(
                    pool, stack, "batched", "gpt2", 8, cell_seconds, random_seeds=True
                )
                details["gpt2-c8-random-seeds"] = random_seeds
                log(
                    f"GPT-2 c=8, batching on, a random seed per request: merged"
                    f" {random_seeds['merged_fraction']:.0%} of requests,"
                    f" {random_seeds['rps']:.1f} req/s"
                )
        finally:
            stack.close()
    tokens = details["generated_tokens"]
    notes.append(
        "value = batching on, baseline = batching off, same run; the client runs in its own"
        " process; every request asks for up to 32 new tokens of the same prompt with the same"
        f" seed (it stops at end-of-text: {tokens['lstm']} tokens for the LSTM,"
        f" {tokens['gpt2']} for GPT-2)"
    )
    notes.append(
        "with a random seed per request (what the generate function sends by default) the"
        f" batcher merged {details['gpt2-c8-random-seeds']['merged_fraction']:.0%} of GPT-2"
        " requests at concurrency 8: its rule needs equal scalar inputs"
    )
    notes.append(
        "in AWS, TensorFlow Serving's own batching refuses these artifacts' rank-0 inputs"
        " (max_new_tokens, temperature, top_k, seed); the local batcher extends the rule"
    )
    return BenchResult(
        name=NAME,
        title="Local SageMaker hosting: InvokeEndpoint latency, batching on vs off",
        rows=rows,
        notes=notes,
        details=details,
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("--seconds", type=float, help="measured seconds per cell")
    args = parser.parse_args(argv)
    result = run(args.quick, args.data, args.seed, args.seconds)
    finish(result, args.json)


if __name__ == "__main__":
    main()
