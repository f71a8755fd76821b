#!/usr/bin/env python3
"""Dump a PyTorch model's activations for calibscope: one folder per calibration batch.

Forward hooks on the chosen modules record each module's input (what a quantized op sees:
the tensor fed to a Linear) or output, and after every calibration batch the recorded tensors
are written into `OUT/batch_NNN/`:

    OUT/batch_000/acts.safetensors   {"model.layers.0.mlp.down_proj.input": tensor, ...}
    OUT/batch_001/acts.safetensors   ...

(or, with --format npy, one `OUT/batch_NNN/<module>.<input|output>.npy` per module). calibscope
reads such a folder as batch folders: one layer per tensor name, one batch per sub-folder:

    calibscope OUT                         # the UI
    calibscope report OUT --format json    # the report

Tensors keep the model's dtype (float32, float16, bfloat16 and float8 are all read; in .npy,
bfloat16 is written as numpy's 2-byte void, which calibscope reads as bfloat16, and float8 as
float32, exactly). A module's input is its first tensor argument (positional, else keyword);
its output the tensor it returns, or the first tensor of a tuple, list or dict. A module run
more than once per batch (a shared module) gets `.input`, `.input.1`, `.input.2`, ...

As a library, with any model and data:

    from dump_activations import ActivationDumper
    with ActivationDumper(model, "acts", modules="*.down_proj,*.o_proj", what="input") as dump:
        for batch in calibration_batches:
            model(batch)
            dump.next_batch()          # writes OUT/batch_NNN

From the command line, for a Hugging Face causal language model (needs torch, safetensors and
transformers):

    python examples/dump_activations.py --hf-model Qwen/Qwen2.5-0.5B --text-file calib.txt \\
        --modules 'model.layers.*.mlp.down_proj' --what input --out acts
    python examples/dump_activations.py --hf-arch llama --random-tokens --out acts   # no download

--hf-arch builds a small randomly initialised model of that architecture from a config (no
weights are downloaded; the activations have the architecture's shapes and names but not a
trained model's statistics); --random-tokens feeds it random token ids instead of text.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from pathlib import Path

import torch

__all__ = ["ActivationDumper", "select_modules"]


def select_modules(model: torch.nn.Module, patterns: str, types: str = "") -> list[str]:
    """Names of the modules matching one of the comma-separated patterns (shell wildcards on
    the dotted module path, or `re:REGEX`), and, if `types` is given, one of its
    comma-separated class names (`Linear,Conv2d`)."""
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    wanted = {t.strip() for t in types.split(",") if t.strip()}

    def match(name: str) -> bool:
        for p in pats:
            if p.startswith("re:"):
                if re.fullmatch(p[3:], name):
                    return True
            elif fnmatch.fnmatchcase(name, p):
                return True
        return False

    return [
        name
        for name, m in model.named_modules()
        if name and match(name) and (not wanted or type(m).__name__ in wanted)
    ]


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


class ActivationDumper:
    """Records the chosen modules' inputs or outputs and writes them once per batch."""

    def __init__(self, model, out, modules="*", what="input", types="", fmt="safetensors",
                 file_name="acts"):
        if what not in ("input", "output", "both"):
            raise ValueError(f"what must be input, output or both, not {what!r}")
        if fmt not in ("safetensors", "npy"):
            raise ValueError(f"format must be safetensors or npy, not {fmt!r}")
        self.model = model
        self.out = Path(out)
        self.what = what
        self.fmt = fmt
        self.file_name = file_name
        self.names = select_modules(model, modules, types)
        if not self.names:
            raise ValueError(f"no module matches --modules {modules!r}"
                             + (f" and --types {types!r}" if types else ""))
        self.batch = 0
        self.recorded: dict[str, torch.Tensor] = {}
        self.handles = []

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for name in self.names:
            m = modules[name]
            if self.what in ("input", "both"):
                self.handles.append(m.register_forward_pre_hook(
                    self._pre_hook(name), with_kwargs=True))
            if self.what in ("output", "both"):
                self.handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False

    def _record(self, key: str, value) -> None:
        t = _first_tensor(value)
        if t is None:
            return
        name, k = key, 1
        while name in self.recorded:
            name, k = f"{key}.{k}", k + 1
        self.recorded[name] = t.detach().to("cpu", copy=True).contiguous()

    def _pre_hook(self, name):
        def hook(module, args, kwargs):
            self._record(f"{name}.input", (args, kwargs))
        return hook

    def _hook(self, name):
        def hook(module, args, output):
            self._record(f"{name}.output", output)
        return hook

    def next_batch(self) -> Path:
        """Writes what was recorded since the last call as the next batch folder."""
        folder = self.out / f"batch_{self.batch:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if self.fmt == "safetensors":
            from safetensors.torch import save_file
            save_file(self.recorded, folder / f"{self.file_name}.safetensors",
                      metadata={"batch": str(self.batch)})
        else:
            import numpy as np
            for name, t in self.recorded.items():
                if t.dtype == torch.bfloat16:
                    a = t.view(torch.int16).numpy().view("V2")
                elif t.dtype.is_floating_point and t.element_size() == 1:
                    a = t.to(torch.float32).numpy()
                else:
                    a = t.numpy()
                np.save(folder / f"{name}.npy", a)
        self.recorded = {}
        self.batch += 1
        return folder


# ---------------------------------------------------------------- command line (Hugging Face)

def _hf_model(args):
    import transformers
    if args.hf_model:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.hf_model,
                                                                  dtype=args.dtype)
        return model
    # A small model of a real architecture, randomly initialised from its config.
    sizes = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=6,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=2048,
                 max_position_embeddings=512)
    config = transformers.AutoConfig.for_model(args.hf_arch, **sizes)
    torch.manual_seed(args.seed)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=args.dtype)


def _batches(args, model):
    if args.random_tokens:
        g = torch.Generator().manual_seed(args.seed)
        vocab = model.config.vocab_size
        for _ in range(args.batches):
            yield {"input_ids": torch.randint(0, vocab, (args.batch_size, args.seq_len),
                                              generator=g)}
        return
    # The text is tokenized as one stream and cut into windows of --seq-len tokens (no padding,
    # whose positions would enter the statistics).
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(args.hf_model)
    text = Path(args.text_file).read_text()
    ids = torch.tensor(tok(text)["input_ids"], dtype=torch.long)
    per_batch = args.batch_size * args.seq_len
    for b in range(min(args.batches, len(ids) // per_batch)):
        window = ids[b * per_batch:(b + 1) * per_batch]
        yield {"input_ids": window.view(args.batch_size, args.seq_len)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf-model", help="a Hugging Face model name or local folder")
    src.add_argument("--hf-arch", help="a transformers model type (llama, qwen2, mistral, ...) "
                     "to build small and randomly initialised")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--text-file", help="calibration text (tokenized as one stream)")
    data.add_argument("--random-tokens", action="store_true", help="random token ids")
    p.add_argument("--modules", default="*",
                   help="comma-separated module paths, shell wildcards or re:REGEX "
                        "(default: all, with --types)")
    p.add_argument("--types", default="Linear",
                   help="comma-separated module class names ('' for any; default Linear)")
    p.add_argument("--what", choices=["input", "output", "both"], default="input")
    p.add_argument("--format", choices=["safetensors", "npy"], default="safetensors")
    p.add_argument("--out", required=True, help="output folder (batch_NNN/ inside)")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.dtype = getattr(torch, args.dtype)

    model = _hf_model(args).eval()
    dumper = ActivationDumper(model, args.out, args.modules, args.what, args.types,
                              args.format)
    print(f"{type(model).__name__}: {len(dumper.names)} modules hooked "
          f"({dumper.names[0]} ... {dumper.names[-1]})", file=sys.stderr)
    folder = None
    with dumper, torch.no_grad():
        for inputs in _batches(args, model):
            model(**inputs)
            folder = dumper.next_batch()
    if folder is None:
        sys.exit("no calibration batch: the text has fewer than --batch-size x --seq-len tokens")
    # One sub-folder alone is not taken for batch folders unless asked.
    layout = "" if dumper.batch > 1 else " --layout batches"
    print(f"{dumper.batch} batches in {args.out}/ (last: {folder}); next:\n"
          f"  calibscope {args.out}{layout}", file=sys.stderr)


if __name__ == "__main__":
    main()
