"""tokendrift_jax: TokenDrift refinement of discrete diffusion LMs (MDLM, DUO) in JAX/Flax."""

__version__ = "0.1.0"
