"""Encoder-decoder generation: flaxtrain's jitted greedy and beam search against `transformers`' generate.

Run:  .venv/bin/python benchmarks/decode.py [--rounds 3] [--batch 8] [--source 32] [--new 32] [--beams 1 4]

A random Marian-layout model (width 256, 3 + 3 layers, 4 heads, MLP 1024, vocabulary 8000) is built
in PyTorch, saved in Hugging Face format and read by flaxtrain, so both decode the same weights from
the same inputs. No token ends a sequence early (the end-of-sequence logit is pushed down), so both
generate exactly `--new` tokens per sequence. Prints generated tokens/s (medians over interleaved
rounds), the flaxtrain/PyTorch ratio, flaxtrain's compile time, and whether the outputs are equal.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import transformers

from flaxtrain import hub
from flaxtrain.eval import decode
from flaxtrain.models import Seq2Seq


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=32)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    config = transformers.MarianConfig(vocab_size=8000, decoder_vocab_size=8000, d_model=256, encoder_layers=3,
                                       decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
                                       encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=256,
                                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=None,
                                       scale_embedding=True)
    reference = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        reference.final_logits_bias[0, 1] = -1e4  # never end early: both generate --new tokens
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        cfg, params, _, generation = hub.load_seq2seq(folder, tokenizer=False)
    module = Seq2Seq(cfg)
    src = np.random.default_rng(0).integers(2, 8000, (args.batch, args.source))
    print(f"batch {args.batch}, source {args.source} tokens, {args.new} new tokens; devices: jax "
          f"{__import__('jax').devices()[0].platform}, torch {torch.get_num_threads()} threads")
    for beams in args.beams:
        g = decode.generation_config(generation, num_beams=beams, max_new_tokens=args.new)
        start = time.perf_counter()
        ours = decode.generate(module, params, src, config=g)
        compile_s = time.perf_counter() - start
        flax_rates, torch_rates = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            ours = decode.generate(module, params, src, config=g)
            flax_rates.append(args.batch * args.new / (time.perf_counter() - t))
            t = time.perf_counter()
            with torch.no_grad():
                want = reference.generate(input_ids=torch.tensor(src), num_beams=beams, max_new_tokens=args.new,
                                          do_sample=False).numpy()
            torch_rates.append(args.batch * args.new / (time.perf_counter() - t))
        same = np.array_equal(ours, want[:, 1:])
        fr, tr = statistics.median(flax_rates), statistics.median(torch_rates)
        print(f"num_beams={beams}: flaxtrain {fr:,.0f} tokens/s, PyTorch {tr:,.0f} tokens/s, ratio {fr / tr:.2f}; "
              f"flaxtrain first call (trace + compile + run) {compile_s:.1f} s; identical ids: {same}")


if __name__ == "__main__":
    main()
