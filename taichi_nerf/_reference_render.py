"""Pure-torch twins of the rendering ops (march_rays, composite); see taichi_nerf.reference."""
