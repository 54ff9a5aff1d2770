"""CameraAdam (--pose-optimizer camera_adam): Adam with a full second moment per camera."""

import torch

from taichi_nerf.training.camera_adam import CameraAdam


def _seed() -> int:
    return int(torch.randint(0, 2**31, ()))


def _run(optimizer_cls, x0, grad_fn, steps, lr, **kw):
    x = torch.nn.Parameter(x0.clone())
    opt = optimizer_cls([x], lr=lr, **kw)
    for k in range(steps):
        x.grad = grad_fn(x.detach(), k)
        opt.step()
    return x.detach()


def test_one_column_is_exactly_torch_adam():
    generator = torch.Generator().manual_seed(_seed())
    noise = torch.randn(30, 7, 1, dtype=torch.float64, generator=generator)
    x0 = torch.randn(7, 1, dtype=torch.float64, generator=generator)
    grad = lambda x, k: 3.0 * x + noise[k]  # noqa: E731
    ours = _run(CameraAdam, x0, grad, 30, 0.05)
    adam = _run(torch.optim.Adam, x0, grad, 30, 0.05)
    assert torch.allclose(ours, adam, rtol=0, atol=1e-12)


def test_a_rotation_of_the_coordinates_gives_the_same_trajectory():
    generator = torch.Generator().manual_seed(_seed())
    n, steps = 5, 25
    q = torch.linalg.qr(torch.randn(n, 6, 6, dtype=torch.float64, generator=generator))[0]
    h = torch.randn(n, 6, 6, dtype=torch.float64, generator=generator)
    h = h @ h.transpose(1, 2) + 0.1 * torch.eye(6, dtype=torch.float64)
    noise = torch.randn(steps, n, 6, dtype=torch.float64, generator=generator)
    x0 = torch.randn(n, 6, dtype=torch.float64, generator=generator)

    def grad_x(x, k):
        return (h @ x[..., None])[..., 0] + noise[k]

    def grad_y(y, k):  # x = Q y: the same loss in rotated coordinates
        x = (q @ y[..., None])[..., 0]
        return (q.transpose(1, 2) @ grad_x(x, k)[..., None])[..., 0]

    x = _run(CameraAdam, x0, grad_x, steps, 0.01)
    y = _run(CameraAdam, (q.transpose(1, 2) @ x0[..., None])[..., 0], grad_y, steps, 0.01)
    # (not bit-equal: the first steps see a rank-deficient moment, whose null space eigh picks
    # differently in the two frames; what leaks through it is ~1e-16 / eps per step)
    assert torch.allclose((q @ y[..., None])[..., 0], x, rtol=0, atol=1e-6)


def test_a_correlated_valley_converges_much_faster_than_with_adam():
    """A tilt and a shift that nearly cancel (curvatures 1 and 1e-3 along the valley, at 45
    degrees to the axes), gradients with a little noise of the Gauss-Newton covariance: the valley's weak
    direction is what plain Adam is slow on."""
    generator = torch.Generator().manual_seed(_seed())
    n, steps = 64, 400
    rot = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / 2**0.5
    h = rot @ torch.diag(torch.tensor([1.0, 1e-3], dtype=torch.float64)) @ rot.T
    root = rot @ torch.diag(torch.tensor([1.0, 1e-3], dtype=torch.float64).sqrt()) @ rot.T
    noise = 0.01 * torch.randn(steps, n, 2, dtype=torch.float64, generator=generator) @ root.T
    x0 = torch.randn(n, 2, dtype=torch.float64, generator=generator) * 0.1

    def grad(x, k):
        return x @ h.T + noise[k]

    def weak(x):  # distance along the valley's weak direction
        return (x @ rot[:, 1]).abs().mean().item()

    ours = _run(CameraAdam, x0, grad, steps, 3e-3)
    adam = _run(torch.optim.Adam, x0, grad, steps, 3e-3)
    assert weak(ours) < 0.5 * weak(adam), (weak(x0), weak(ours), weak(adam))


def test_state_dict_resumes_exactly():
    generator = torch.Generator().manual_seed(_seed())
    noise = torch.randn(20, 4, 6, dtype=torch.float64, generator=generator)
    x0 = torch.randn(4, 6, generator=generator)  # float32 parameters, float64 moments
    noise = noise.float()
    straight = _run(CameraAdam, x0, lambda x, k: x + noise[k], 20, 0.01)
    a, b = torch.nn.Parameter(x0[:, :3].clone()), torch.nn.Parameter(x0[:, 3:].clone())
    opt = CameraAdam([a, b], lr=0.01)
    for k in range(20):
        if k == 10:  # a fresh optimiser from the saved state, as a resumed run builds it
            state = opt.state_dict()
            opt = CameraAdam([a, b], lr=0.01)
            opt.load_state_dict(state)
        g = torch.cat([a, b], -1).detach() + noise[k]
        a.grad, b.grad = g[:, :3].clone(), g[:, 3:].clone()
        opt.step()
    assert torch.equal(torch.cat([a, b], -1).detach(), straight)
