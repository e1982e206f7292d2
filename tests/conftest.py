"""Test-session setup: 8 simulated CPU devices, deterministic float32 matmuls.

Numerical tests
---------------
* Comparisons of arrays and pytrees go through ``chex.assert_trees_all_close`` (or
  ``chex.assert_trees_all_equal`` for exact ones) on the whole tree, so that a failure
  names the leaf. Tolerances are always explicit (``rtol=`` and ``atol=``: chex's default
  rtol is 1e-6, NumPy's 1e-7, so a call converted from NumPy passes the old rtol) and each
  is justified in a comment by what the computation's rounding allows (float32
  reassociation, a float64 reference, ...).
  Shapes and dtypes through ``chex.assert_shape`` / ``assert_type`` / ``assert_rank``.
* A comparison that is not elementwise stays hand-written with a comment saying why: a
  norm-relative error (``rel_err``, max |diff| / max |ref|), a cosine, a statistical
  bound, a lower bound ("parameters must move"), an inequality ("must differ").
* References the tests compare against are independent implementations written from the
  papers / public code and live in tests/references/ (PyTorch DIT, the MDLM/DUO Gen-PPL
  protocol, MDLM wrapping, a NumPy entropy); they run in float64 where they can.
* Pure math is checked under ``chex.variants`` (with and without jit) where the function
  is meant to be traced.
* Builders shared by several directories (tiny tokenizer, GPT-2 judge, DIT checkpoints,
  LLaDA directories, tiny runs) are session fixtures in this file; the tiny-run builders
  are a plain module (tests/helpers/tiny_run.py) because subprocess configs import them.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# libtpu (tests/perf/test_targets.py compiles for TPU topologies) locks the host's TPU
# chips when it loads; compile-only use needs none, and the suite's processes (or two
# sessions) may load it at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# The launch scripts re-execute themselves under glibc's allocator tunables
# (tokendrift_jax/malloc.py). One of them set here (huge pages only: the suite's many
# short programs would keep every freed page under heap reuse), test subprocesses start
# as they are instead of re-executing, and a script run in this process (runpy) never
# re-executes pytest; tests/test_malloc.py checks the re-execution itself in a child
# without it.
if "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
  os.environ["GLIBC_TUNABLES"] = ":".join(
      t for t in (os.environ.get("GLIBC_TUNABLES", ""), "glibc.malloc.hugetlb=1") if t)

import chex  # noqa: E402  (imports jax; no backend is initialised by the import)

# Before any JAX operation: every test sees 8 CPU devices and single-device tests build
# their mesh from jax.devices()[:1]. chex rewrites XLA_FLAGS in os.environ (replacing any
# device count already there), so test subprocesses that inherit the environment get 8
# devices too; those that need another count (the jax.distributed tests) set XLA_FLAGS
# themselves.
chex.set_n_cpu_devices(8)

# The suite's time is mostly XLA:CPU compiling tiny programs, and most of that is LLVM's
# optimisation of the generated code, which the tests' tiny shapes cannot profit from.
# Level 0 keeps XLA's own HLO passes (so the programs are the ones users run) and skips
# only LLVM's; it halves many tests' wall time. Numbers keep IEEE semantics (XLA:CPU
# fast-math stays off), so every tolerance keeps its meaning. Test subprocesses that set
# their own XLA_FLAGS add TEST_XLA_FLAGS to it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["TOKENDRIFT_TEST_XLA_FLAGS"] = TEST_XLA_FLAGS
os.environ["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {TEST_XLA_FLAGS}"

import jax  # noqa: E402

# float32 matmuls at full precision so parity tolerances mean what they say.
jax.config.update("jax_default_matmul_precision", "highest")

import tempfile  # noqa: E402

# Identical programs compiled by several tests (or test subprocesses, which inherit the
# variable) are compiled once per session.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               tempfile.mkdtemp(prefix="tokendrift_jax_xla_cache_"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402
import shutil  # noqa: E402


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", default=False,
                   help="also run tests marked slow (longer multi-process checks)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer checks, skipped unless --runslow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="slow: run with --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


# ====================================================================== shared fixtures
# Builders shared by several test directories. Heavy libraries (torch, transformers,
# tokenizers) are imported inside the builders, so a directory that does not use them does
# not pay for them.

import pathlib  # noqa: E402
import types  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------- tiny tokenizer
# A GPT-2-like byte-level BPE trained offline with `tokenizers` on a fixed synthetic
# corpus, saved as an HF tokenizer directory that `transformers.AutoTokenizer` loads as
# GPT2TokenizerFast. As in GPT-2, the single special token <|endoftext|> is the last id
# (vocab_size - 1) and serves as BOS, EOS and UNK.

ENDOFTEXT = "<|endoftext|>"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _training_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
  """Deterministic pseudo-English lines: enough distinct pairs for a few hundred merges."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  syllables = ["".join(rng.choice(list(_LETTERS), size=rng.integers(1, 4))) for _ in range(300)]
  lines = []
  for _ in range(n_lines):
    words = ["".join(rng.choice(syllables, size=rng.integers(1, 4)))
             for _ in range(rng.integers(4, 12))]
    lines.append(" ".join(words) + rng.choice([".", ",", "!", "?"]))
  return lines


def _build_tiny_tokenizer(directory, vocab_size: int = 512) -> str:
  """Trains and saves the tokenizer; returns ``directory`` as a string.

  Args:
    directory: created if missing; receives tokenizer.json and the HF configs.
    vocab_size: total ids including ``<|endoftext|>`` (= vocab_size - 1); at least
      258 (the 256 byte symbols, one merge, the special token).
  """
  # pylint: disable=import-outside-toplevel
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  if vocab_size < 258:
    raise ValueError(f"vocab_size must be >= 258 (256 bytes + 1 merge + EOS), got {vocab_size}")
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=1,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=[], show_progress=False)
  tok.train_from_iterator(_training_corpus(), trainer=trainer)
  if tok.get_vocab_size() != vocab_size - 1:
    raise RuntimeError(f"BPE training produced {tok.get_vocab_size()} ids, wanted "
                       f"{vocab_size - 1}; the synthetic corpus is too small for this size")
  # Added after training so that, as in GPT-2, it takes the last id.
  tok.add_special_tokens([ENDOFTEXT])
  fast = transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT,
                                        eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
  os.makedirs(directory, exist_ok=True)
  fast.save_pretrained(str(directory))
  return str(directory)


@pytest.fixture(scope="session")
def build_tiny_tokenizer():
  """Factory: ``build_tiny_tokenizer(directory, vocab_size=512) -> str`` writes the tiny
  GPT-2-like tokenizer (EOS ``<|endoftext|>`` = vocab_size - 1) to ``directory``."""
  return _build_tiny_tokenizer


# ---------------------------------------------------------------------- tiny GPT-2 judge
# A tiny random GPT-2 written as a Hugging Face PyTorch directory with the tiny tokenizer,
# small enough to run in seconds on CPU. Weights are random (not the zero/identity init),
# so parity tests compare real computations.

GPT2_VOCAB = 320  # default tiny vocabulary; EOS = GPT2_VOCAB - 1
GPT2_CONTEXT = 32  # n_positions of the shared tiny judge (tiny_gpt2_judge)


def _build_tiny_gpt2(path, vocab_size: int = GPT2_VOCAB, n_positions: int = 32,
                     n_layer: int = 2, n_embd: int = 32, n_head: int = 4, seed: int = 0,
                     init_std: float = 0.2, safe_serialization: bool = True,
                     tokenizer_dir: str | None = None):
  """Writes a tiny random ``GPT2LMHeadModel`` plus tokenizer to an HF directory.

  Args:
    path: output directory (created).
    vocab_size: tokenizer vocabulary (EOS = vocab_size - 1) and the model's
      vocab_size.
    n_positions: the judge context (GPT-2 large: 1024); tests use a tiny one so
      texts longer than one chunk are cheap.
    init_std: std of the random weights. Larger than GPT-2's 0.02 so the judge's
      predictions are far from uniform and the NLLs differ from token to token.
    safe_serialization: write model.safetensors (True) or pytorch_model.bin.
    tokenizer_dir: copy this tokenizer (e.g. the vendored GPT-2 BPE, vocab_size 50257)
      instead of training the tiny one.

  Returns:
    (model, tokenizer): the PyTorch model (eval mode, float32) and tokenizer.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  if tokenizer_dir is None:
    _build_tiny_tokenizer(path, vocab_size=vocab_size)
  else:
    for f in os.listdir(tokenizer_dir):
      if f.endswith((".json", ".txt")):
        shutil.copyfile(os.path.join(tokenizer_dir, f), path / f)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  assert len(tokenizer) == vocab_size and tokenizer.eos_token_id == vocab_size - 1
  config = transformers.GPT2Config(
      vocab_size=vocab_size, n_positions=n_positions, n_ctx=n_positions,
      n_embd=n_embd, n_layer=n_layer, n_head=n_head,
      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
      initializer_range=init_std)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    # LayerNorm gains/biases and linear biases start at 1/0; perturb them too so
    # every parameter the conversion maps is exercised by the parity checks.
    for name, p in model.named_parameters():
      if name.endswith(".bias") or ".ln_" in name or name.startswith("transformer.ln_f"):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(path), safe_serialization=safe_serialization)
  return model, tokenizer


@pytest.fixture(scope="session")
def build_tiny_gpt2():
  """Factory: ``build_tiny_gpt2(path, vocab_size=320, n_positions=32, ..., seed=0,
  safe_serialization=True) -> (model, tokenizer)`` writes a tiny random GPT-2 HF directory."""
  return _build_tiny_gpt2


@pytest.fixture(scope="session")
def tiny_gpt2_judge(tmp_path_factory):
  """The tiny GPT-2 judge (seed 0, context 32) as a PyTorch HF directory (``.pt``) and
  converted to Flax (``.flax``), built once per session; ``.vocab``, ``.eos``."""
  from convert.gpt2 import convert_gpt2  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("gpt2_judge")
  _build_tiny_gpt2(root / "pt", n_positions=GPT2_CONTEXT)
  convert_gpt2(root / "pt", root / "flax", verify=False)
  return types.SimpleNamespace(pt=root / "pt", flax=root / "flax", vocab=GPT2_VOCAB,
                               eos=ENDOFTEXT, context=GPT2_CONTEXT)


# ---------------------------------------------------------------------- the real GPT-2 BPE
# The GPT-2 tokenizer vendored in tests/assets/gpt2 (README there: source, license), real
# English documents, and a tiny random GPT-2 judge that uses that tokenizer.

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
GPT2_BPE_VOCAB = 50257
BPE_JUDGE_CONTEXT = 256


@pytest.fixture(scope="session")
def gpt2_bpe(tmp_path_factory):
  """Directory of the real GPT-2 tokenizer (50257 ids, EOS 50256): the vendored files plus
  the ``tokenizer.json`` transformers builds from them, written once per session (loading
  the vendored vocab.json/merges.txt converts them, ~1 s per load; the same tokenizer)."""
  import transformers  # pylint: disable=import-outside-toplevel
  out = tmp_path_factory.mktemp("gpt2_bpe")
  vendored = os.path.join(ASSETS, "gpt2")
  for f in os.listdir(vendored):
    if f.endswith((".json", ".txt")):
      shutil.copyfile(os.path.join(vendored, f), out / f)
  transformers.AutoTokenizer.from_pretrained(vendored).save_pretrained(str(out))
  return str(out)


@pytest.fixture(scope="session")
def english_docs():
  """Twelve short English documents (tests/assets/english.jsonl), one with a literal
  "[PAD]"; a fresh list per use."""
  import json  # pylint: disable=import-outside-toplevel
  with open(os.path.join(ASSETS, "english.jsonl"), encoding="utf-8") as f:
    return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="session")
def bpe_gpt2_judge(tmp_path_factory, gpt2_bpe):
  """A tiny random GPT-2 (1 layer, width 16, context 256) with the real GPT-2 tokenizer,
  as a PyTorch HF directory (``.pt``) and converted to Flax (``.flax``)."""
  from convert.gpt2 import convert_gpt2  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("bpe_judge")
  _build_tiny_gpt2(root / "pt", vocab_size=GPT2_BPE_VOCAB, n_positions=BPE_JUDGE_CONTEXT,
                   n_layer=1, n_embd=16, n_head=2, seed=3, tokenizer_dir=gpt2_bpe)
  convert_gpt2(root / "pt", root / "flax", verify=False)
  return types.SimpleNamespace(pt=root / "pt", flax=root / "flax", context=BPE_JUDGE_CONTEXT)


# ---------------------------------------------------------------------- PyTorch DIT checkpoints
# Tiny PyTorch DIT checkpoints (tests/references/torch_dit.py) in every source format the
# converter reads: HF directories, bare state dicts, Lightning checkpoints.

TORCH_DIT_TINY = dict(vocab_size=37, hidden_size=32, cond_dim=16, n_blocks=3, n_heads=4,
                      length=16, dropout=0.1)


def _tiny_torch_dit_cfg(arch: str, **over) -> dict:
  cfg = dict(TORCH_DIT_TINY, time_conditioning=(arch == "duo"))
  cfg.update(over)
  return cfg


def _build_torch_dit(cfg: dict, seed: int = 0):
  import torch  # pylint: disable=import-outside-toplevel
  from tests.references.torch_dit import DIT, randomize_  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  return randomize_(DIT(cfg), seed).eval()


def _torch_state(model, prefix: str = "backbone.") -> dict:
  # The rotary buffer is part of the released state dicts; keep it.
  return {prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _hf_config(cfg: dict, arch: str) -> dict:
  """config.json as the HF releases write it.

  MDLM's MDLMConfig has ``time_conditioning``; DUO's DUOConfig has none (DUO is always
  time-conditioned) but ``causal`` and ``var_min``.
  """
  out = {"model_type": arch, "vocab_size": cfg["vocab_size"], "model_length": cfg["length"],
         "hidden_dim": cfg["hidden_size"], "cond_dim": cfg["cond_dim"],
         "n_blocks": cfg["n_blocks"], "n_heads": cfg["n_heads"], "dropout": cfg["dropout"]}
  if arch == "duo":
    assert cfg["time_conditioning"]
    out.update(causal=False, var_min=True, architectures=["DUO"])
  else:
    out.update(time_conditioning=cfg["time_conditioning"], architectures=["MDLM"])
  return out


def _save_hf_dir(model, path: str, arch: str, fmt: str = "safetensors") -> str:
  import json  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(_hf_config(model.cfg, arch), f)
  state = _torch_state(model)
  if fmt == "safetensors":
    save_file(state, os.path.join(path, "model.safetensors"))
  else:
    torch.save(state, os.path.join(path, "pytorch_model.bin"))
  return path


def _save_bare(model, path: str, prefix: str = "") -> str:
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  state = _torch_state(model, prefix)
  if path.endswith(".safetensors"):
    save_file(state, path)
  else:
    torch.save(state, path)
  return path


def _hydra_config(cfg: dict, arch: str):
  from omegaconf import OmegaConf  # pylint: disable=import-outside-toplevel
  model = {"name": "tiny", "type": "ddit", "hidden_size": cfg["hidden_size"],
           "cond_dim": cfg["cond_dim"], "length": cfg["length"], "n_blocks": cfg["n_blocks"],
           "n_heads": cfg["n_heads"], "scale_by_sigma": True, "dropout": cfg["dropout"]}
  if arch == "mdlm":  # MDLM keeps these at the top level of its config
    conf = {"model": model, "diffusion": "absorbing_state", "parameterization": "subs",
            "time_conditioning": cfg["time_conditioning"]}
  else:               # DUO nests them under algo
    conf = {"model": model, "algo": {"name": "duo_base", "parameterization": "mean",
                                     "time_conditioning": cfg["time_conditioning"]}}
  return OmegaConf.create(conf)


def _save_lightning(model, path: str, arch: str, ema_model=None) -> str:
  """A checkpoint shaped like the ones the MDLM/DUO Lightning trainers write."""
  import torch  # pylint: disable=import-outside-toplevel
  sd = _torch_state(model)
  sd["noise.dummy_buffer"] = torch.zeros(1)  # non-backbone entries exist in real ckpts
  ckpt = {"epoch": 0, "global_step": 10, "state_dict": sd,
          "hyper_parameters": {"config": _hydra_config(model.cfg, arch)},
          "loops": {}, "optimizer_states": []}
  if ema_model is not None:
    ckpt["ema"] = {"decay": 0.9999, "num_updates": 10,
                   "shadow_params": [p.detach().clone() for p in ema_model.parameters()],
                   "collected_params": []}
  torch.save(ckpt, path)
  return path


@pytest.fixture(scope="session")
def torch_dit_config():
  """Factory: ``torch_dit_config(arch, **over) -> dict``, the tiny PyTorch DIT config
  (vocab 37, width 32, 3 blocks; time-conditioned for DUO)."""
  return _tiny_torch_dit_cfg


@pytest.fixture(scope="session")
def build_torch_dit():
  """Factory: ``build_torch_dit(cfg, seed=0)``, a randomized PyTorch DIT in eval mode."""
  return _build_torch_dit


@pytest.fixture(scope="session")
def save_hf_dir():
  """Factory: ``save_hf_dir(model, path, arch, fmt="safetensors"|"bin") -> path``, an HF
  model directory as the MDLM / DUO releases write it."""
  return _save_hf_dir


@pytest.fixture(scope="session")
def save_bare():
  """Factory: ``save_bare(model, path, prefix="") -> path``, a bare .safetensors / .bin
  state dict."""
  return _save_bare


@pytest.fixture(scope="session")
def save_lightning():
  """Factory: ``save_lightning(model, path, arch, ema_model=None) -> path``, a Lightning
  .ckpt shaped like the MDLM / DUO trainers' (with the EMA shadow when given)."""
  return _save_lightning


# ---------------------------------------------------------------------- Flax DiT vs PyTorch DIT
# Shared by the model parity tests (tests/models/test_dit.py) and the conversion tests
# (tests/convert/test_dit.py): both convert a PyTorch DIT and compare the Flax forward.


def _dit_inputs(vocab, seed=0, length=16, batch=3):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(batch, length)).astype(np.int64)
  sigma = rng.uniform(0.05, 5.0, size=(batch,))
  return ids, sigma


def _rel_err(got, ref):
  # Not elementwise on purpose: the parity bound is relative to the largest logit (a
  # per-element rtol would fail on logits near zero that carry no signal).
  import numpy as np  # pylint: disable=import-outside-toplevel
  return float(np.max(np.abs(np.asarray(got, np.float64) - ref)) / np.max(np.abs(ref)))


def _convert_dit(src, dst, *extra):
  from convert.__main__ import main as convert_main  # pylint: disable=import-outside-toplevel
  rc = convert_main([str(src), str(dst), *extra])
  assert rc == 0, f"conversion failed with exit code {rc}"
  return dst


@pytest.fixture(scope="module")
def torch_dits():
  """{"mdlm": ..., "duo": ...}: tiny randomized PyTorch DITs (seeds 1 and 2), per module."""
  return {arch: _build_torch_dit(_tiny_torch_dit_cfg(arch), seed=i + 1)
          for i, arch in enumerate(("mdlm", "duo"))}


@pytest.fixture(scope="session")
def dit_inputs():
  """Factory: ``dit_inputs(vocab, seed=0, length=16, batch=3) -> (ids int64 [B, L],
  sigma float64 [B])``."""
  return _dit_inputs


@pytest.fixture(scope="session")
def rel_err():
  """``rel_err(got, ref)``: max |got - ref| / max |ref| in float64."""
  return _rel_err


@pytest.fixture(scope="session")
def convert_dit():
  """Factory: ``convert_dit(src, dst, *extra_args) -> dst`` runs ``python -m convert``'s
  main in-process and asserts it succeeded."""
  return _convert_dit


# ---------------------------------------------------------------------- PyTorch LLaDA directories
# Tiny LLaDA releases (tests/references/torch_llada.py): config.json with every field
# explicit, safetensors shards + index. Shared by tests/models/test_llada.py and
# tests/convert/test_llada.py. The sizes are pairwise distinct (V 160, d 64, kv 32, mlp 96)
# so that a transposed or swapped tensor cannot pass a shape check.

TORCH_LLADA_TINY = dict(d_model=64, n_heads=4, n_kv_heads=2, n_layers=3, mlp_hidden_size=96,
                        vocab_size=160, embedding_size=160, max_sequence_length=32,
                        rope_theta=500000.0, mask_token_id=150, eos_token_id=140,
                        pad_token_id=140)


def _llada_hf_config(**over) -> dict:
  from tests.references.torch_llada import full_hf_config  # pylint: disable=import-outside-toplevel
  return full_hf_config(**dict(TORCH_LLADA_TINY, **over))


def _build_torch_llada(cfg: dict, seed: int = 0):
  # pylint: disable=import-outside-toplevel
  from tests.references.torch_llada import LLaDA, randomize_
  return randomize_(LLaDA(cfg), seed).eval()


@pytest.fixture(scope="session")
def llada_hf_config():
  """Factory: ``llada_hf_config(**over) -> dict``, the config.json of a tiny LLaDA (GQA 4 ->
  2 heads, 3 blocks, rope_theta 500000 as the 8B, mask id 150 of 160), every field given."""
  return _llada_hf_config


@pytest.fixture(scope="session")
def build_torch_llada():
  """Factory: ``build_torch_llada(cfg, seed=0)``, a randomized PyTorch LLaDA in eval mode."""
  return _build_torch_llada


@pytest.fixture(scope="session")
def save_llada_dir():
  """Factory: ``save_llada_dir(model, path, n_shards=3, dtype=torch.float32) -> path``, an
  HF LLaDA directory (config.json, shards + model.safetensors.index.json)."""
  from tests.references.torch_llada import save_hf_dir  # pylint: disable=import-outside-toplevel
  return save_hf_dir


# ---------------------------------------------------------------------- PyTorch Dream directories
# Tiny Dream releases (tests/references/torch_dream.py): config.json with every DreamConfig
# field explicit, safetensors shards + index. Shared by tests/models/test_dream.py and
# tests/convert/test_dream.py. Sizes pairwise distinct (V 176, d 64, kv 32, mlp 80) so that a
# transposed or swapped tensor cannot pass a shape check; rope_theta and rms_norm_eps are
# not the class defaults, so a converter reading the default instead fails parity.

TORCH_DREAM_TINY = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=3, intermediate_size=80, vocab_size=176,
                        max_position_embeddings=32, rope_theta=1000000.0, rms_norm_eps=1e-5,
                        mask_token_id=170, pad_token_id=160, bos_token_id=160,
                        eos_token_id=161)


def _dream_hf_config(**over) -> dict:
  from tests.references.torch_dream import full_hf_config  # pylint: disable=import-outside-toplevel
  return full_hf_config(**dict(TORCH_DREAM_TINY, **over))


def _build_torch_dream(cfg: dict, seed: int = 0):
  # pylint: disable=import-outside-toplevel
  from tests.references.torch_dream import Dream, randomize_
  return randomize_(Dream(cfg), seed).eval()


@pytest.fixture(scope="session")
def dream_hf_config():
  """Factory: ``dream_hf_config(**over) -> dict``, the config.json of a tiny Dream (GQA 4 ->
  2 heads, 3 blocks, rope_theta 1e6 as the 7B, rms_norm_eps 1e-5, mask id 170 of 176)."""
  return _dream_hf_config


@pytest.fixture(scope="session")
def build_torch_dream():
  """Factory: ``build_torch_dream(cfg, seed=0)``, a randomized PyTorch Dream in eval mode
  (biases non-zero, norm weights around but not at 1)."""
  return _build_torch_dream


@pytest.fixture(scope="session")
def save_dream_dir():
  """Factory: ``save_dream_dir(model, path, n_shards=3, dtype=torch.float32) -> path``, an
  HF Dream directory (config.json, shards + model.safetensors.index.json)."""
  from tests.references.torch_dream import save_hf_dir  # pylint: disable=import-outside-toplevel
  return save_hf_dir


# ---------------------------------------------------------------------- tiny training runs
# The builders live in tests/helpers/tiny_run.py (a plain module) because the config files
# of the launch/train.py subprocess tests import them in the child process.


@pytest.fixture(scope="session")
def tiny_model_config():
  """Factory: ``tiny_model_config(arch, **over) -> DiTConfig`` (vocab 33, width 32,
  2 blocks, length 16; time-conditioned for DUO)."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.tiny_model_config


@pytest.fixture(scope="session")
def random_params():
  """Factory: ``random_params(config, seed)``, initial DiT params with every leaf perturbed."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.random_params


@pytest.fixture(scope="session")
def make_tokens():
  """Factory: ``make_tokens(path, n, length, vocab, seed) -> path``, an int32 .npy of rows
  with repeated structure."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.make_tokens


@pytest.fixture(scope="session")
def tiny_run_config():
  """Factory: ``tiny_run_config(tmp, arch="mdlm", objective="drift", *, steps=3,
  mesh_shape=(-1, 1), num_devices=0, param_sharding="replicated", global_batch=16,
  micro_batch=8, queue_size=24, seed=0)``: a complete tiny run config, its backbone and
  token data written under ``tmp`` (once)."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.tiny_config


@pytest.fixture(scope="session")
def tiny_llada_config():
  """Factory: ``tiny_llada_config(**over) -> LLaDAConfig`` (vocab 256 with the mask 250,
  width 64, 2 blocks, GQA 4 -> 2 heads, length 16, no dropout); clean ids are below 250."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.tiny_llada_config


@pytest.fixture(scope="session")
def tiny_llada_run_config():
  """Factory: ``tiny_llada_run_config(tmp, objective="drift", *, steps=1, mesh_shape=(-1, 1),
  num_devices=0, param_sharding="replicated", global_batch=16, micro_batch=8, queue_size=24,
  prompt_mode="none", prompt_length=0, pool="all", seed=0)``: configs/llada_drift.py with
  the tiny LLaDA, its random backbone (RMSNorm weights perturbed too) and token data with
  companion prompt lengths written under ``tmp`` (once)."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.tiny_llada_run_config


@pytest.fixture(scope="session")
def tiny_dream_run_config():
  """Factory: ``tiny_dream_run_config(tmp, objective="drift", *, prompt_mode="none",
  prompt_length=0, global_batch=16, micro_batch=8, queue_size=24, seed=0)``:
  configs/dream_drift.py with a tiny Dream (vocab 256, mask 250, width 64, 2 blocks, GQA 4
  -> 2 heads, length 16), its random backbone and token data written under ``tmp`` (once),
  on one device."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.tiny_dream_run_config


@pytest.fixture(scope="session")
def with_periodic_eval():
  """Factory: ``with_periodic_eval(config, every, nfe=(2,), num_samples=8, batch=4)`` turns
  on validation NLL and the sampling hook (judged by the tiny synthetic language)."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.with_periodic_eval


@pytest.fixture(scope="session")
def tiny_lang():
  """The synthetic language whose MDLM vocabulary (32 + mask) is the tiny model's (a dict
  of synthetic.make_language arguments; a fresh copy per use)."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return dict(tiny_run.TINY_LANG)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  """A directory per test module for tiny_run_config's backbone and data."""
  return str(tmp_path_factory.mktemp("tiny"))


def _read_losses(workdir):
  from tokendrift_jax.train import metrics_writer  # pylint: disable=import-outside-toplevel
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [r["loss"] for r in rows if "loss" in r]


def _exported_params(workdir):
  from tokendrift_jax import checkpoints  # pylint: disable=import-outside-toplevel
  return checkpoints.load_backbone_params(os.path.join(workdir, "backbone"))[1]


def _max_abs_diff(a, b):
  # For lower bounds only ("parameters must move"): chex has no tree assert for "differs";
  # closeness of trees goes through chex.assert_trees_all_close.
  import numpy as np  # pylint: disable=import-outside-toplevel
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="session")
def read_losses():
  """``read_losses(workdir)``: the logged training losses of a run, in order."""
  return _read_losses


@pytest.fixture(scope="session")
def exported_params():
  """``exported_params(workdir)``: the params of the backbone a run exported."""
  return _exported_params


@pytest.fixture(scope="session")
def max_abs_diff():
  """``max_abs_diff(tree_a, tree_b)``: max |a - b| over all leaves, float64 (for lower
  bounds such as "parameters must move"; use chex.assert_trees_all_close for closeness)."""
  return _max_abs_diff


# ---------------------------------------------------------------------- sample evaluation
# A tiny MDLM backbone (random, every leaf perturbed) sampled and judged by the tiny GPT-2
# judge, shared by tests/eval/ and the launch/eval.py and launch/compare.py tests.

EVAL_LENGTH = 16          # backbone length = sample length = retokenization max_length
EVAL_NFES = (2, 4)
EVAL_SEEDS = (0, 1)
EVAL_NUM_SAMPLES = 8
EVAL_GROUP = 4            # texts per retokenization call


def _eval_dit_config(vocab: int):
  from tokendrift_jax.models.dit import DiTConfig  # pylint: disable=import-outside-toplevel
  return DiTConfig(vocab_size=vocab, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4,
                   length=EVAL_LENGTH, dropout=0.0)


def _eval_backbone(path: str, vocab: int, seed: int, arch: str = "mdlm") -> str:
  # pylint: disable=import-outside-toplevel
  from tests.helpers import tiny_run
  from tokendrift_jax import checkpoints
  from tokendrift_jax.models.dit import DiTConfig
  cfg = _eval_dit_config(vocab)
  if arch == "duo":
    cfg = DiTConfig(**dict(cfg.to_dict(), time_conditioning=True))
  # random_params perturbs every leaf (adaLN / output layers start at zero).
  checkpoints.save_backbone(path, cfg, tiny_run.random_params(cfg, seed), meta={"process": arch})
  return path


def _eval_config(assets, **over):
  from configs import eval as eval_configs  # pylint: disable=import-outside-toplevel
  c = eval_configs.get_config()
  c.checkpoint = assets["ckpt"]
  c.judge = assets["flax"]
  c.tokenizer = assets["pt"]
  c.nfe, c.seeds, c.num_samples, c.batch = EVAL_NFES, EVAL_SEEDS, EVAL_NUM_SAMPLES, 8
  c.judge_group_size = EVAL_GROUP
  c.progress = False
  for k, v in over.items():
    c[k] = v
  return c


def _eval_cli_args(assets, out, nfes=EVAL_NFES, seeds=EVAL_SEEDS):
  import sys  # pylint: disable=import-outside-toplevel
  return [sys.executable, os.path.join(ROOT, "launch", "eval.py"),
          f"--config={os.path.join(ROOT, 'configs', 'eval.py')}",
          f"--config.checkpoint={assets['ckpt']}", f"--workdir={out}",
          f"--config.judge={assets['flax']}", f"--config.tokenizer={assets['pt']}",
          f"--config.nfe={tuple(nfes)}", f"--config.seeds={tuple(seeds)}",
          f"--config.num_samples={EVAL_NUM_SAMPLES}", "--config.batch=8",
          f"--config.judge_group_size={EVAL_GROUP}", "--config.label=MDLM"]


@pytest.fixture(scope="session")
def eval_dit_config():
  """Factory: ``eval_dit_config(vocab) -> DiTConfig`` of the evaluated tiny backbones
  (width 32, 2 blocks, length 16, no dropout)."""
  return _eval_dit_config


@pytest.fixture(scope="session")
def eval_backbone():
  """Factory: ``eval_backbone(path, vocab, seed, arch="mdlm") -> path`` saves a random
  tiny backbone (eval_dit_config; time-conditioned for DUO)."""
  return _eval_backbone


@pytest.fixture(scope="session")
def eval_assets(tmp_path_factory, tiny_gpt2_judge):
  """{"root", "pt", "flax", "ckpt", "ckpt2"}: the tiny judge (PyTorch and Flax dirs) and two
  tiny MDLM backbones (vocab = the judge's 320 + the mask), once per session."""
  root = tmp_path_factory.mktemp("eval_driver")
  vocab = tiny_gpt2_judge.vocab + 1       # MDLM: the tokenizer's ids + the mask, last
  return {"root": root, "pt": str(tiny_gpt2_judge.pt), "flax": str(tiny_gpt2_judge.flax),
          "ckpt": _eval_backbone(str(root / "mdlm_released"), vocab, seed=3),
          "ckpt2": _eval_backbone(str(root / "mdlm_other"), vocab, seed=11)}


@pytest.fixture(scope="session")
def eval_config():
  """Factory: ``eval_config(eval_assets, **overrides)``, the evaluation config of
  configs/eval.py for eval_assets (NFE (2, 4), seeds (0, 1), 8 samples, groups of 4)."""
  return _eval_config


@pytest.fixture(scope="session")
def eval_cli_args():
  """Factory: ``eval_cli_args(eval_assets, out, nfes=(2, 4), seeds=(0, 1))``, the
  launch/eval.py command line of eval_config."""
  return _eval_cli_args


@pytest.fixture(scope="session")
def eval_cli_run(eval_assets):
  """launch/eval.py as a user runs it, in a subprocess with 8 CPU devices (once per session):
  (output directory, CompletedProcess)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  out = eval_assets["root"] / "cli_out"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  proc = subprocess.run(_eval_cli_args(eval_assets, out), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc
