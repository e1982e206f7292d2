"""TokenDrift objective: soft-token lift, frozen-encoder features, drift field, losses, queues.

Modules: ``lift`` (Sec. 3.1), ``features`` (App. F), ``field`` (Sec. 3.2; drifting Alg. 2),
``queue`` (FIFO feature queues), ``objective`` (Alg. 1, Sec. 3.3-3.4).
"""

from tokendrift_jax.drift.features import (DEFAULT_ENCODER_SIGMA, clean_features,
                                           encoder_features, encoder_sigma, l2_normalize,
                                           pool_features)
from tokendrift_jax.drift.field import (DEFAULT_EPS, DEFAULT_TEMPERATURES, drift_field,
                                        pairwise_sq_dists)
from tokendrift_jax.drift.lift import LIFT_MODES, soft_token_lift
from tokendrift_jax.drift.objective import (DEFAULT_MIRROR_ETA, OBJECTIVES, DriftAux,
                                            DriftConfig, References, build_references,
                                            drift_from_features, fixed_point_loss,
                                            mirror_direction, mirror_kl_loss, mirror_mse_loss,
                                            mirror_teacher_logits, push_features,
                                            tokendrift_loss)
from tokendrift_jax.drift.queue import (FeatureQueue, fill_fraction, init_queue, ordered, push,
                                        valid_mask)
