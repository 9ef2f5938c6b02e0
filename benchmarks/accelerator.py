"""One prepared run on an accelerator: parity against PyTorch `transformers` on the same device, train-step
throughput and MFU against PyTorch (eager and `torch.compile`), decoding against `generate`, and the
batch-size finder against the largest batch that actually runs. Writes one JSON and prints a table.

Run:  PYTHONPATH=. python benchmarks/accelerator.py [--out results.json]      # GPU machine, 8 minutes or less
      python benchmarks/accelerator.py --smoke                                 # tiny sizes, any CPU (the suite runs it)

Needs only jax (with its CUDA plugin on a GPU), flax, optax, orbax, einops, jaxtyping, numpy, torch and
transformers: no TensorFlow. Batches are numpy arrays fed to flaxtrain's compiled steps; models come
from Hugging Face-format checkpoint folders of random-initialised `transformers` models, loaded by
flaxtrain's public hub loaders.

Sections (each records its own error and the run goes on, so one failure does not lose the rest):
  parity      every encoder family (BERT, RoBERTa, XLM-R, DistilBERT, ALBERT) and T5/BART/Marian, float32
              within 1e-3 and bf16 compute within 5e-2 of the float32 reference (max |diff| of hidden states /
              logits over unpadded positions, relative to the reference's max |value|);
  attention   flaxtrain's 'auto' attention (cuDNN flash attention on a GPU) against its einsum path (GPU only);
  train       BERT-base and T5-base train steps, batch 32 x 512, bf16: tokens/s, MFU (XLA's FLOP count of the
              compiled step over the device peak), and PyTorch's (bf16 autocast, eager and torch.compile);
  decode      greedy decoding tokens/s of a T5-small-size model against `generate` on the same device;
  batch_size  `find_batch_size` on the BERT-base classifier against the largest batch whose step runs.
"""

from __future__ import annotations

import os

# This process runs PyTorch next to JAX on one GPU: JAX takes 60% of it instead of its default 75% at start.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from flaxtrain import hub, models
from flaxtrain.eval import decode
from flaxtrain.machine import doctor
from flaxtrain.models import Seq2Seq
from flaxtrain.models.encoder import Encoder, EncoderConfig
from flaxtrain.ops.attention import dot_product_attention
from flaxtrain.tasks.classification import classification_loss, predict_log_probs
from flaxtrain.train import compile_steps, create_train_state, init_params, make_optimizer

FULL = dict(encoder=dict(vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
            seq2seq=dict(vocab_size=32128, d_model=768, layers=12, heads=12, d_ff=3072),
            parity=dict(vocab=1000, hidden=256, layers=4, heads=4, mlp=1024, batch=8, length=128),
            decode=dict(vocab=32128, d_model=512, layers=6, heads=8, d_ff=2048, batch=32, source=128, new=64),
            batch=32, length=512, steps=10, tolerance=1e-3, bf16_tolerance=5e-2, batch_cap=1024, compile=True)
SMOKE = dict(encoder=dict(vocab_size=211, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64),
             seq2seq=dict(vocab_size=211, d_model=32, layers=2, heads=4, d_ff=64),
             parity=dict(vocab=97, hidden=24, layers=2, heads=3, mlp=40, batch=3, length=11),
             decode=dict(vocab=97, d_model=32, layers=2, heads=4, d_ff=48, batch=4, source=12, new=8),
             batch=4, length=16, steps=2, tolerance=1e-4, bf16_tolerance=5e-2, batch_cap=64, compile=False,
             simulated_limit=5_000_000)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def torch_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- parity ------------------------------------------------------------------------------------------
def encoder_references(p: dict[str, int]) -> dict[str, Callable[[], Any]]:
    sizes = dict(vocab_size=p["vocab"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                 hidden_size=p["hidden"], intermediate_size=p["mlp"])
    positions = p["length"] + 2
    return {
        "bert": lambda: transformers.BertModel(transformers.BertConfig(**sizes, max_position_embeddings=positions)),
        "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(
            **sizes, max_position_embeddings=positions + 2, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)),
        "xlm-roberta": lambda: transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
            **sizes, max_position_embeddings=positions + 2, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)),
        "distilbert": lambda: transformers.DistilBertModel(transformers.DistilBertConfig(
            vocab_size=p["vocab"], n_layers=p["layers"], n_heads=p["heads"], dim=p["hidden"], hidden_dim=p["mlp"],
            max_position_embeddings=positions)),
        "albert": lambda: transformers.AlbertModel(transformers.AlbertConfig(
            **sizes, embedding_size=max(p["hidden"] // 2, 8), max_position_embeddings=positions, hidden_act="gelu_new")),
    }


def seq2seq_references(p: dict[str, int]) -> dict[str, Callable[[], Any]]:
    v, d, layers, heads, mlp = p["vocab"], p["hidden"], p["layers"], p["heads"], p["mlp"]
    sizes = dict(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                 decoder_attention_heads=heads, encoder_ffn_dim=mlp, decoder_ffn_dim=mlp,
                 max_position_embeddings=p["length"] + 2, dropout=0.0)
    return {
        "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=v, d_model=d, d_kv=d // heads, d_ff=mlp, num_layers=layers, num_heads=heads, dropout_rate=0.0,
            decoder_start_token_id=0, feed_forward_proj="gated-gelu")),
        "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(vocab_size=v, **sizes)),
        "marian": lambda: transformers.MarianMTModel(transformers.MarianConfig(
            vocab_size=v, decoder_vocab_size=v, pad_token_id=v - 1, decoder_start_token_id=v - 1, scale_embedding=True,
            activation_function="swish", **sizes)),
    }


def relative(ours: np.ndarray, want: np.ndarray, keep: np.ndarray) -> float:
    ours, want = np.asarray(ours, np.float64)[keep], np.asarray(want, np.float64)[keep]
    return float(np.abs(ours - want).max() / max(np.abs(want).max(), 1e-6))


def parity(cfg: dict, tmp: Path) -> list[dict[str, Any]]:
    p, rows = cfg["parity"], []
    rng = np.random.default_rng(0)
    lengths = np.linspace(p["length"], max(p["length"] // 3, 1), p["batch"]).astype(int)
    mask = (np.arange(p["length"])[None, :] < lengths[:, None]).astype(np.int64)
    device = torch_device()
    for family, make in encoder_references(p).items():
        torch.manual_seed(0)
        reference = make().eval().to(device)
        folder = tmp / family
        reference.save_pretrained(folder)
        word_tokenizer([f"w{i}" for i in range(p["vocab"] - 5)]).save(str(folder / "tokenizer.json"))  # the loader reads one
        pad = reference.config.pad_token_id or 0
        ids = np.where(mask == 1, rng.integers(5, p["vocab"], mask.shape), pad)
        with torch.no_grad():
            want = reference(input_ids=torch.tensor(ids, device=device),
                             attention_mask=torch.tensor(mask, device=device)).last_hidden_state.float().cpu().numpy()
        config, params, _ = hub.load_pretrained(folder)
        row = {"model": family}
        for dtype in ("float32", "bfloat16"):
            module = Encoder(models.with_compute_dtype(config, dtype) if dtype != "float32" else config)
            hidden, _ = jax.jit(lambda i, m: module.apply({"params": params}, i, attention_mask=m, deterministic=True))(
                jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
            row[dtype] = relative(np.asarray(hidden, np.float32), want, mask == 1)
        rows.append(row)
    for family, make in seq2seq_references(p).items():
        torch.manual_seed(0)
        reference = make().eval().to(device)
        folder = tmp / family
        reference.save_pretrained(folder)
        config, params, _, _ = hub.load_seq2seq(folder, tokenizer=False)
        src = np.where(mask == 1, rng.integers(3, p["vocab"] - 2, mask.shape), config.pad_id)
        tgt = rng.integers(3, p["vocab"] - 2, (p["batch"], max(p["length"] // 2, 2)))
        tgt[:, 0] = config.decoder_start_id
        with torch.no_grad():
            want = reference(input_ids=torch.tensor(src, device=device), attention_mask=torch.tensor(mask, device=device),
                             decoder_input_ids=torch.tensor(tgt, device=device)).logits.float().cpu().numpy()
        row = {"model": family}
        for dtype in ("float32", "bfloat16"):
            module = Seq2Seq(models.with_compute_dtype(config, dtype) if dtype != "float32" else config)
            logits = jax.jit(lambda s, t, m: module.apply({"params": params}, s, t, attention_mask=m, deterministic=True))(
                jnp.asarray(src, jnp.int32), jnp.asarray(tgt, jnp.int32), jnp.asarray(mask, jnp.int32))
            row[dtype] = relative(np.asarray(logits, np.float32), want, np.ones(want.shape, bool))
        rows.append(row)
    for row in rows:
        row["ok"] = row["float32"] <= cfg["tolerance"] and row["bfloat16"] <= cfg["bf16_tolerance"]
    return rows


def attention(cfg: dict) -> dict[str, Any]:
    if jax.default_backend() != "gpu":
        return {"skipped": f"cudnn attention needs a GPU (backend {jax.default_backend()})"}
    b, t, h, d = cfg["batch"], cfg["length"], 12, 64
    q, k, v = (jax.random.normal(jax.random.key(i), (b, t, h, d), jnp.bfloat16) for i in range(3))
    lengths = jnp.linspace(t, t // 3, b).astype(jnp.int32)
    mask = (jnp.arange(t)[None, None, None, :] < lengths[:, None, None, None])
    ours = jax.jit(lambda q, k, v, m: dot_product_attention(q, k, v, mask=m, implementation="einsum"))
    cudnn = jax.jit(lambda q, k, v, m: dot_product_attention(q, k, v, mask=m, implementation="auto"))  # cudnn here
    a, c = ours(q, k, v, mask), cudnn(q, k, v, mask)
    seconds = {name: min(timed(lambda f=f: f(q, k, v, mask).block_until_ready()) for _ in range(5))
               for name, f in (("einsum", ours), ("cudnn", cudnn))}
    diff = float(jnp.abs(a.astype(jnp.float32) - c.astype(jnp.float32)).max())
    return {"max_abs_diff_bf16": diff, "ok": diff < 2e-2, "einsum_ms": 1e3 * seconds["einsum"],
            "cudnn_ms": 1e3 * seconds["cudnn"]}


# --- train steps -------------------------------------------------------------------------------------
def peak(precision: str) -> float | None:
    from flaxtrain.train.throughput import peak_flops

    return peak_flops(precision)


def flax_encoder_step(cfg: dict, ids: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    config = models.HeadConfig(EncoderConfig(**cfg["encoder"], dropout_rate=0.1), num_classes=2)
    module = models.build_model("transformer", models.with_compute_dtype(config, "bfloat16"))
    params = init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)}, jax.random.key(0))
    steps = compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)
    batch = {"input_ids": ids, "label": labels, "weight": np.ones(len(ids), np.float32)}
    return run_flax(steps, create_train_state(module, params, make_optimizer(5e-5, weight_decay=0.01)), batch, cfg)


def flax_seq2seq_step(cfg: dict, src: np.ndarray, tgt: np.ndarray) -> dict[str, Any]:
    from flaxtrain.tasks.seq2seq import seq2seq_loss

    s = cfg["seq2seq"]
    config = models.Seq2SeqConfig(vocab_size=s["vocab_size"], hidden_size=s["d_model"], num_layers=s["layers"],
                                  num_decoder_layers=s["layers"], num_heads=s["heads"], head_dim=s["d_model"] // s["heads"],
                                  mlp_dim=s["d_ff"], dropout_rate=0.1, family="t5", attention_scale=1.0,
                                  scale_logits=True)
    module = Seq2Seq(models.with_compute_dtype(config, "bfloat16"))
    sample = {"input_ids": jnp.zeros((1, 16), jnp.int32), "decoder_input_ids": jnp.zeros((1, 8), jnp.int32)}
    params = init_params(module, sample, jax.random.key(0))
    steps = compile_steps(module.apply, seq2seq_loss)
    batch = {"input_ids": src, "decoder_input_ids": tgt, "labels": tgt, "weight": np.ones(len(src), np.float32)}
    return run_flax(steps, create_train_state(module, params, make_optimizer(1e-4)), batch, cfg)


def run_flax(steps: Any, state: Any, batch: dict[str, np.ndarray], cfg: dict) -> dict[str, Any]:
    key = jax.random.key(0)
    flops = steps.flops(state, batch, key)
    first = time.perf_counter()
    state, out = steps.train(state, batch, key)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - first
    holder = {"state": state}

    def run() -> None:
        result = None
        for _ in range(cfg["steps"]):
            holder["state"], result = steps.train(holder["state"], batch, key)
        jax.block_until_ready(result)

    seconds = min(timed(run) for _ in range(2)) / cfg["steps"]
    tokens = int(np.prod(batch["input_ids"].shape)) + int(np.prod(batch.get("decoder_input_ids", np.zeros(0)).shape))
    top = peak("bfloat16")
    return {"tokens_per_s": tokens / seconds, "step_ms": 1e3 * seconds, "first_step_s": compile_s,
            "mfu": flops / seconds / top if flops and top else None}


def torch_step(make: Callable[[], Any], inputs: dict[str, torch.Tensor], cfg: dict, compiled: bool) -> dict[str, Any]:
    device = torch_device()
    net = make().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5, weight_decay=0.01)
    forward = torch.compile(net) if compiled else net
    dtype = torch.bfloat16

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=dtype):
            loss = forward(**inputs).loss
        loss.backward()
        opt.step()

    first = timed(lambda: (step(), torch_sync()))

    def run() -> None:
        for _ in range(cfg["steps"]):
            step()
        torch_sync()

    seconds = min(timed(run) for _ in range(2)) / cfg["steps"]
    tokens = sum(int(v.numel()) for k, v in inputs.items() if k in ("input_ids", "decoder_input_ids"))
    return {"tokens_per_s": tokens / seconds, "step_ms": 1e3 * seconds, "first_step_s": first}


def train(cfg: dict) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    e, b, t = cfg["encoder"], cfg["batch"], cfg["length"]
    ids = rng.integers(1000 % e["vocab_size"], e["vocab_size"], (b, t)).astype(np.int32)
    labels = rng.integers(0, 2, b).astype(np.int32)
    device = torch_device()
    bert = lambda: transformers.BertForSequenceClassification(transformers.BertConfig(  # noqa: E731
        vocab_size=e["vocab_size"], hidden_size=e["hidden_size"], num_hidden_layers=e["num_layers"],
        num_attention_heads=e["num_heads"], intermediate_size=e["mlp_dim"], num_labels=2,
        max_position_embeddings=max(512, t), attn_implementation="sdpa"))
    bert_inputs = {"input_ids": torch.tensor(ids, dtype=torch.long, device=device),
                   "labels": torch.tensor(labels, dtype=torch.long, device=device)}
    s = cfg["seq2seq"]
    src = rng.integers(3, s["vocab_size"], (b, t)).astype(np.int32)
    tgt = rng.integers(3, s["vocab_size"], (b, t // 4)).astype(np.int32)
    t5 = lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(  # noqa: E731
        vocab_size=s["vocab_size"], d_model=s["d_model"], d_kv=s["d_model"] // s["heads"], d_ff=s["d_ff"],
        num_layers=s["layers"], num_heads=s["heads"], decoder_start_token_id=0))
    t5_inputs = {"input_ids": torch.tensor(src, dtype=torch.long, device=device),
                 "decoder_input_ids": torch.tensor(tgt, dtype=torch.long, device=device),
                 "labels": torch.tensor(tgt, dtype=torch.long, device=device)}
    rows = []
    for name, ours, make, inputs in (("bert-base classifier", lambda: flax_encoder_step(cfg, ids, labels), bert, bert_inputs),
                                     ("t5-base", lambda: flax_seq2seq_step(cfg, src, tgt), t5, t5_inputs)):
        row = {"model": name, "batch": f"{b} x {t}", "flaxtrain": section(ours)}
        row["pytorch eager"] = section(lambda: torch_step(make, inputs, cfg, compiled=False))
        row["pytorch compile"] = (section(lambda: torch_step(make, inputs, cfg, compiled=True)) if cfg["compile"]
                                  else {"skipped": "torch.compile in the smoke run (minutes of CPU compile)"})
        mine = row["flaxtrain"].get("tokens_per_s")
        for other in ("pytorch eager", "pytorch compile"):
            theirs = row[other].get("tokens_per_s")
            row[f"ratio to {other}"] = mine / theirs if mine and theirs else None
        rows.append(row)
    return rows


# --- decoding ------------------------------------------------------------------------------------------
def decoding(cfg: dict, tmp: Path) -> dict[str, Any]:
    p = cfg["decode"]
    device = torch_device()
    torch.manual_seed(0)
    reference = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=p["vocab"], d_model=p["d_model"], d_kv=p["d_model"] // p["heads"], d_ff=p["d_ff"], num_layers=p["layers"],
        num_heads=p["heads"], dropout_rate=0.0, decoder_start_token_id=0)).eval()
    reference.save_pretrained(tmp / "decode")
    reference = reference.to(device)
    config, params, _, generation = hub.load_seq2seq(tmp / "decode", tokenizer=False)
    src = np.random.default_rng(0).integers(3, p["vocab"], (p["batch"], p["source"]))
    mask = np.ones_like(src)
    settings = dict(num_beams=1, max_new_tokens=p["new"], min_new_tokens=p["new"])
    g = decode.generation_config(generation, **settings)
    module = Seq2Seq(config)
    got = decode.generate(module, params, src, mask, config=g)  # compiles
    ours = min(timed(lambda: decode.generate(module, params, src, mask, config=g)) for _ in range(3))
    inputs = dict(input_ids=torch.tensor(src, device=device), attention_mask=torch.tensor(mask, device=device))
    with torch.no_grad():
        want = reference.generate(**inputs, do_sample=False, **settings)
        torch_sync()
        theirs = min(timed(lambda: (reference.generate(**inputs, do_sample=False, **settings), torch_sync()))
                     for _ in range(3))
    want = decode.finish(want.cpu().numpy()[:, 1:], g)
    tokens = p["batch"] * p["new"]
    return {"flaxtrain_tokens_per_s": tokens / ours, "generate_tokens_per_s": tokens / theirs, "ratio": theirs / ours,
            "same_tokens": bool(np.array_equal(np.asarray(got)[:, :want.shape[1]], want))}


# --- batch size ----------------------------------------------------------------------------------------
def word_tokenizer(words: list[str]) -> Any:
    """A word-level tokenizer.json with BERT's special tokens (no asset package on the accelerator)."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tokenizer


def batch_size(cfg: dict, tmp: Path) -> dict[str, Any]:
    """The public finder (`learner.find_batch_size`, XLA's memory analysis of the compiled step) on a
    BERT-base classifier, bf16, against the largest batch whose train step actually runs, found by
    running steps at growing sizes until the device runs out of memory. On CPU (smoke) the device is
    simulated (a memory limit), where running cannot fail: there both come from the analysis."""
    import flaxtrain
    import flaxtrain.text
    from flaxtrain.train.batch_size import longest_rows

    e, t = cfg["encoder"], cfg["length"]
    folder = tmp / "bert-classifier"
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=e["vocab_size"], hidden_size=e["hidden_size"], num_hidden_layers=e["num_layers"],
        num_attention_heads=e["num_heads"], intermediate_size=e["mlp_dim"], max_position_embeddings=max(512, t))
    ).save_pretrained(folder)
    words = [f"w{i}" for i in range(min(e["vocab_size"] - 5, 2000))]
    word_tokenizer(words).save(str(folder / "tokenizer.json"))
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=t)) for _ in range(cfg["batch_cap"])]
    labels = [str(i % 2) for i in range(len(texts))]
    transformer = flaxtrain.text.Transformer(str(folder), maxlen=t)
    trn = transformer.preprocess_train(texts, labels, verbose=0)
    learner = flaxtrain.get_learner(transformer.get_classifier(), trn, batch_size=8, precision="bfloat16")
    simulated = cfg.get("simulated_limit") if jax.default_backend() == "cpu" else None
    chosen = learner.find_batch_size(memory_limit=simulated, max_batch_size=cfg["batch_cap"])
    rows = longest_rows(learner.task.batches(learner.train_data, batch_size=1)[0])
    key = jax.random.key(0)

    def runs(size: int) -> bool:
        batch = {k: np.resize(v, (size, *v.shape[1:])) for k, v in rows.items()}
        if simulated is not None:
            return learner.steps.memory(learner._train_state(), batch, key)["peak"] <= 0.9 * simulated
        try:
            learner._state, out = learner.steps.train(learner._train_state(), batch, key)
            jax.block_until_ready(out)
            return True
        except Exception as err:  # noqa: BLE001 (XLA reports running out of memory as RESOURCE_EXHAUSTED)
            if "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower():
                learner._state = None  # the donated state may be gone: start from the model's params again
                return False
            raise

    largest = _largest(runs, 8, cfg["batch_cap"], start=chosen)
    return {"finder": chosen, "largest_that_runs": largest, "finder_share": chosen / largest if largest else None,
            "simulated_limit_bytes": simulated}


def _largest(ok: Callable[[int], bool], quantum: int, cap: int, start: int) -> int:
    """The largest multiple of `quantum` up to `cap` for which ok() holds, searched from `start` (each try
    compiles a step): up in growing strides until it fails, or down, then bisection."""
    low = start if ok(start) else 0
    if not low:
        high = start
        while high > quantum and not ok(high // 2 // quantum * quantum):
            high = high // 2 // quantum * quantum
        low = high // 2 // quantum * quantum if high > quantum else 0
        if not low:
            return 0
    else:
        stride, high = max(quantum, start // 16 // quantum * quantum), None
        while high is None:
            probe = min(low + stride, cap)
            if probe == low:
                return low
            if ok(probe):
                low, stride = probe, stride * 2
            else:
                high = probe
    while high - low > quantum:
        mid = (low + high) // 2 // quantum * quantum
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low


# --- the run -------------------------------------------------------------------------------------------
def section(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 (one section's failure is recorded, and the run goes on)
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def table(results: dict[str, Any]) -> str:
    lines = [f"{results['device']} | jax {results['versions'].get('jax')} | torch {torch.__version__} | "
             f"transformers {transformers.__version__}"]
    parity_rows = results["parity"]
    if isinstance(parity_rows, list):
        lines.append("parity (max |diff| / max |ref|)   float32      bf16   ok")
        lines += [f"  {r['model']:<14}                 {r['float32']:9.2e} {r['bfloat16']:9.2e}   {r['ok']}" for r in parity_rows]
    else:
        lines.append(f"parity: {parity_rows}")
    lines.append(f"attention: {json.dumps(results['attention'])}")
    if isinstance(results["train"], list):
        for row in results["train"]:
            ours = row["flaxtrain"]
            mfu = f"{100 * ours['mfu']:.1f}%" if ours.get("mfu") else "unknown"
            lines.append(f"train {row['model']} {row['batch']} bf16: flaxtrain {ours.get('tokens_per_s', 0):,.0f} tok/s "
                         f"(MFU {mfu}, first step {ours.get('first_step_s', 0):.1f} s); "
                         + "; ".join(f"{k} {row[k]:.2f}x" if isinstance(row[k], float) else f"{k} n/a"
                                     for k in ("ratio to pytorch eager", "ratio to pytorch compile")))
    else:
        lines.append(f"train: {results['train']}")
    lines.append(f"decode: {json.dumps(results['decode'])}")
    lines.append(f"batch size: {json.dumps(results['batch_size'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, the test suite)")
    parser.add_argument("--out", default=None, help="JSON file to write (default: benchmarks/results/accelerator-<device>.json)")
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else FULL
    device = jax.devices()[0]
    results: dict[str, Any] = {"device": f"{device.platform} {device.device_kind} x {jax.device_count()}",
                               "python": platform.python_version(), "smoke": args.smoke}
    report = section(lambda: doctor(check_tensorflow=False, measure_peak=True))
    results["versions"] = report.get("versions", {}) if isinstance(report, dict) else {}
    results["doctor"] = report
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results["parity"] = section(lambda: parity(cfg, Path(tmp)))
        results["attention"] = section(lambda: attention(cfg))
        results["train"] = section(lambda: train(cfg))
        results["decode"] = section(lambda: decoding(cfg, Path(tmp)))
        results["batch_size"] = section(lambda: batch_size(cfg, Path(tmp)))
    results["seconds"] = time.perf_counter() - started
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"accelerator-{device.platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    print(f"wrote {out} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
