"""Every default of the library, in one place.

The compander defaults come from the project's benchmark study (docs/results/README.md):
gain and limit are the setting its stage 2 chose on the Fashion-MNIST validation split
(``configs/study/grid-fsmall.toml``: of tanh gain {1.5, 2, 3} x limit {2, 3, 5} and mu-law,
gain 1.5 / limit 2 scored best; gain 2 / limit 3, the DESIGN starting point, was worse and
gain 3 failed to train). Whether WC helps at all is stage 3's question (docs/study.md).
"""

DEFAULT_KIND = "tanh"

# Hyperparameter defaults per kind, in units of the tensor scale ``s``.
TANH_GAIN = 1.5  # slope at zero: small weights are expanded by this factor
TANH_LIMIT = 2.0  # |w| < limit * s; Kaiming-uniform init lies within sqrt(3) * s, so 2 inverts
MULAW_MU = 8.0  # strength: slope at zero is mu / log1p(mu)
MULAW_CROSSOVER = 3.0  # f(+-c * s) = +-c * s: weights beyond c * s are compressed

# The paper's kinds (arctan, asinh, erf: ``a * phi(v / b)``), meant in absolute units (scale=1.0).
# (1.0, 0.6) is one of the pairs its grid over {0.5, ..., 1.0}^2 chose; its learnable "fine"
# version starts at a = 0.5, b = 1.0 (pass them explicitly).
PAPER_A = 1.0
PAPER_B = 0.6
LINEAR_SLOPE = 1.0  # the linear control w = slope * v (same slope at zero as a*arctan(v/b): a/b)
POWERPROP_ALPHA = 2.0  # Powerpropagation's w = v * |v|^(alpha - 1) (Schwarz et al. 2021)

DEFAULT_LEARNABLE = False  # fixed hyperparameters unless asked otherwise
DEFAULT_SCALE = "std"  # s = std of the tensor when companding is applied
DEFAULT_OVERFLOW = "expand"  # bounded kinds: raise the limit to cover weights beyond it

# A weight is "near zero" when |w| < NEAR_ZERO * s (reported by ``stats``).
NEAR_ZERO = 0.1
# Bounded kinds treat |w| > (1 - OVERFLOW_MARGIN) * bound as touching the bound: such values
# invert to very large raw values whose gradient is almost zero (a saturated, dead weight).
OVERFLOW_MARGIN = 0.02

# ``apply`` without ``include`` warns when it compands less than this share of the model's
# weight-matrix parameters: a layer type is probably missing from the registry (``layer_types.py``).
COVERAGE_WARNING = 0.5
# ... and when the weight-matrix parameters it leaves out in modules of no registered layer type
# (3-D ones included: XLNet's attention, mixture-of-experts layers of unknown classes) make up
# this share or more: cls tokens and position tables stay well below it.
UNREGISTERED_WARNING = 0.1
