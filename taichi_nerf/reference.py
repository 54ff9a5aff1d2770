"""Pure-torch twins of every public kernel op, with identical signatures.

Each twin is the specification its Taichi op is tested against (forward, backward with a random
upstream gradient, float64 gradcheck) and a readable CPU fallback.
"""

from taichi_nerf._reference_encoding import *  # noqa: F401,F403
from taichi_nerf._reference_render import *  # noqa: F401,F403
