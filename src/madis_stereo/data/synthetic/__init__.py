"""An infinite, seeded synthetic stereo dataset with exact dense ground truth (see ``world.py``).

``config`` (settings) <- ``shapes``, ``textures`` <- ``scene`` (random layered scenes) <- ``world`` (rendering,
the dataset).
"""

from madis_stereo.data.synthetic.config import SyntheticConfig
from madis_stereo.data.synthetic.world import SyntheticRender, SyntheticStereo, render_scene

__all__ = ["SyntheticConfig", "SyntheticRender", "SyntheticStereo", "render_scene"]
