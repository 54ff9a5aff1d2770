"""Pure-torch twins of the encoding ops (hash_encode, sh_encode); see taichi_nerf.reference."""
