"""Adam with one full 6x6 second moment per camera (``--pose-optimizer camera_adam``).

Plain Adam scales each coordinate of ``(omega, delta_t)`` by its own gradient RMS, so it cannot
see that a tilt and a sideways shift of a camera are nearly the same change of its image (the
rotation/translation valley of issue 9). This optimiser keeps, per camera ``i``, the moving
average ``V_i`` of the outer product ``g_i g_i^T`` of its 6 gradient components and steps by
``-lr * (V_i + eps I)^(-1/2) m_i`` (``m_i``: the usual first moment). Where the gradient noise is
what ``V_i`` measures, ``E[g g^T]`` is the photometric Gauss-Newton matrix of that camera
(summed over its rays), so the step is whitened along the valley, in the images' own metric
(CamP's ``P`` is the same idea with a geometric stand-in, fixed at the start). Where plain
Adam's rate along a weak direction that is correlated with a strong one falls with the ratio of
their curvatures, here it falls only with its square root; it is invariant to any rotation of a
camera's coordinates, and like Adam it moves each whitened direction by at most about ``lr`` per
step. With ``K = 1`` it is exactly torch's Adam.

``travel_boost > 1`` adds a per-camera step multiplier in ``[1, travel_boost]`` (delta-bar-delta,
Jacobs 1988, on windows of ``travel_window`` steps): doubled after a window whose net move of the
row's first three columns (the rotation, when learned) points the same way as the previous
window's (cosine > 0.7), halved when it does not (< 0.3). A camera still travelling toward a
far optimum (a large initial error) speeds up; one jittering about its optimum, whose windows
point anywhere, stays at about the base rate.

``travel_full_rate``: the multiplier's cap also grows with the schedule's decay, to
``initial_lr / lr`` (the group's ``initial_lr``, set by torch's lr schedulers) when that is
larger, so a camera whose windows keep agreeing can always step at the *starting* rate, however
far the schedule has decayed; early on (decay under ``travel_boost``-fold) nothing changes.
"""

from __future__ import annotations

import torch

__all__ = ["CameraAdam"]


class CameraAdam(torch.optim.Optimizer):
    """Adam over ``[N, k]`` parameters that share their first axis (one row per camera), with a
    full ``[K, K]`` second moment per row (``K`` = the summed ``k``); a ``[k]`` parameter (one
    shared by every camera) is one row of its own group.

    Args:
        params: the pose parameters, e.g. ``rotation_delta [N, 3]`` and
            ``translation_delta [N, 3]`` (one group; their columns are concatenated per camera).
        lr: step size, as Adam's.
        betas: as Adam's.
        eps: added to the square roots of ``V_i``'s eigenvalues, as Adam's ``eps``.
        travel_boost: the largest per-camera step multiplier (1: off; see the module).
        travel_window: steps per window of the travel test.
        travel_full_rate: let the cap grow to ``initial_lr / lr`` (see the module).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, travel_boost: float = 1.0, travel_window: int = 50,
                 travel_full_rate: bool = False) -> None:
        if not (travel_boost >= 1.0 and travel_window >= 1):
            raise ValueError(f"CameraAdam needs travel_boost >= 1 and travel_window >= 1, got "
                             f"{travel_boost} and {travel_window}")
        self.travel_boost, self.travel_window = float(travel_boost), int(travel_window)
        self.travel_full_rate = bool(travel_full_rate)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        for group in self.param_groups:
            rows = {_rows(p) for p in group["params"]}
            if len(rows) != 1 or any(p.dim() not in (1, 2) for p in group["params"]):
                raise ValueError("CameraAdam needs [N, k] parameters with one common N (or [k] "
                                 f"ones: one row), got {[list(p.shape) for p in group['params']]}")

    def load_state_dict(self, state_dict) -> None:
        """As torch's, but the moments stay float64 (torch would cast them to the parameters'
        dtype, and a resumed run would then differ from an uninterrupted one)."""
        super().load_state_dict(state_dict)
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in zip(ids, params):
            saved = state_dict["state"].get(i)
            if saved is not None:
                self.state[p] = {k: v.detach().clone().to(p.device) for k, v in saved.items()}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = group["params"]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            g = torch.cat([v.reshape(_rows(v), -1) for v in grads], -1).double()  # [N, K]
            state = self.state[params[0]]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float64)
                state["exp_avg"] = torch.zeros_like(g)
                state["exp_avg_outer"] = g.new_zeros(*g.shape, g.shape[-1])
            beta1, beta2 = group["betas"]
            state["step"] += 1
            t = float(state["step"])
            state["exp_avg"].lerp_(g, 1 - beta1)
            state["exp_avg_outer"].mul_(beta2).add_(g[:, :, None] * g[:, None, :],
                                                    alpha=1 - beta2)
            m_hat = state["exp_avg"] / (1 - beta1 ** t)
            v_hat = state["exp_avg_outer"] / (1 - beta2 ** t)
            values, vectors = torch.linalg.eigh(v_hat)
            scale = 1.0 / (values.clamp_min(0).sqrt() + group["eps"])
            whitened = vectors.transpose(1, 2) @ m_hat[..., None]
            update = (vectors @ (scale[..., None] * whitened))[..., 0]
            if self.travel_boost > 1:
                cap = self.travel_boost
                if self.travel_full_rate and group["lr"] > 0:
                    cap = max(cap, group.get("initial_lr", group["lr"]) / group["lr"])
                update = update * self._travel_scale(state, params, t, cap)[:, None]
            start = 0
            for p in params:
                k = p.numel() // _rows(p)
                p.add_(update[:, start:start + k].reshape(p.shape).to(p.dtype),
                       alpha=-group["lr"])
                start += k
        return loss

    def _travel_scale(self, state: dict, params: list, t: float, cap: float) -> torch.Tensor:
        """The per-row multipliers ``[N]`` (float64) in ``[1, cap]``, updated at the end of
        each window."""
        def rotations() -> torch.Tensor:  # (only at a window's start and end)
            return torch.cat([p.detach().reshape(_rows(p), -1) for p in params], -1)[:, :3].double()

        if "travel_scale" not in state:
            x = rotations()
            state["travel_scale"] = x.new_ones(x.shape[0])
            state["travel_start"] = x
            state["travel_previous"] = torch.zeros_like(x)  # zero: no window yet (cosine 0)
        if int(t) % self.travel_window == 0:
            x = rotations()
            move, previous = x - state["travel_start"], state["travel_previous"]
            cosine = (move * previous).sum(-1) / (move.norm(dim=-1) * previous.norm(dim=-1)
                                                  + 1e-300)
            scale = state["travel_scale"]
            scale = torch.where(cosine > 0.7, (2 * scale).clamp(max=cap), scale)
            state["travel_scale"] = torch.where(cosine < 0.3, (scale / 2).clamp(min=1.0), scale)
            state["travel_previous"], state["travel_start"] = move, x
        return state["travel_scale"].clamp(max=cap)


def _rows(p: torch.Tensor) -> int:
    """Cameras a parameter holds rows for: ``N`` of ``[N, k]``, 1 for a shared ``[k]``."""
    return p.shape[0] if p.dim() == 2 else 1
