"""Builders of tiny PyTorch DIT checkpoints in every source format the converter reads."""

from __future__ import annotations

import json
import os

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from tests.torch_dit import DIT, randomize_

TINY = dict(vocab_size=37, hidden_size=32, cond_dim=16, n_blocks=3, n_heads=4, length=16,
            dropout=0.1)


def tiny_cfg(arch: str, **over) -> dict:
  cfg = dict(TINY, time_conditioning=(arch == "duo"))
  cfg.update(over)
  return cfg


def build_torch_dit(cfg: dict, seed: int = 0) -> DIT:
  torch.manual_seed(seed)
  return randomize_(DIT(cfg), seed).eval()


def _state(model: DIT, prefix: str = "backbone.") -> dict:
  # The rotary buffer is part of the released state dicts; keep it.
  return {prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def hf_config(cfg: dict, arch: str) -> dict:
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


def save_hf_dir(model: DIT, path: str, arch: str, fmt: str = "safetensors") -> str:
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config(model.cfg, arch), f)
  state = _state(model)
  if fmt == "safetensors":
    save_file(state, os.path.join(path, "model.safetensors"))
  else:
    torch.save(state, os.path.join(path, "pytorch_model.bin"))
  return path


def save_bare(model: DIT, path: str, prefix: str = "") -> str:
  state = _state(model, prefix)
  if path.endswith(".safetensors"):
    save_file(state, path)
  else:
    torch.save(state, path)
  return path


def hydra_config(cfg: dict, arch: str):
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


def save_lightning(model: DIT, path: str, arch: str, ema_model: DIT | None = None) -> str:
  """A checkpoint shaped like the ones the MDLM/DUO Lightning trainers write."""
  sd = _state(model)
  sd["noise.dummy_buffer"] = torch.zeros(1)  # non-backbone entries exist in real ckpts
  ckpt = {"epoch": 0, "global_step": 10, "state_dict": sd,
          "hyper_parameters": {"config": hydra_config(model.cfg, arch)},
          "loops": {}, "optimizer_states": []}
  if ema_model is not None:
    ckpt["ema"] = {"decay": 0.9999, "num_updates": 10,
                   "shadow_params": [p.detach().clone() for p in ema_model.parameters()],
                   "collected_params": []}
  torch.save(ckpt, path)
  return path
