"""Live web viewer (viser) of a training run, or of a finished one.

``--viewer`` on the training commands starts :class:`ViewerHook` (:mod:`.hook`); ``taichi-nerf-view
RUN`` serves a finished run (:mod:`.run`). The package: :mod:`.controls` (what the browser asked,
written by the server's threads), :mod:`.server` (viser start-up and the control panel),
:mod:`.scene` (camera frustums, box, occupancy grid), :mod:`.panel` (the render panel, rendered
in time slices), :mod:`.session` (one viewer, driven from the thread that owns the field).

viser is an optional dependency (``pip install 'taichi-nerf[viewer]'``); importing this package
does not import it.
"""

from __future__ import annotations

from taichi_nerf.viewer.server import INSTALL_HINT, ViewerError, check_address, import_viser

__all__ = ["INSTALL_HINT", "ViewerError", "ViewerHook", "check_viewer"]


def check_viewer(host: str, port: int) -> None:
    """Raise :class:`ViewerError` (one line) unless a viewer can start on ``host:port`` now:
    viser is installed, the host is an address of this machine, the port is free."""
    import_viser()
    check_address(host, port)


def __getattr__(name: str):
    if name == "ViewerHook":
        from taichi_nerf.viewer.hook import ViewerHook

        return ViewerHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
