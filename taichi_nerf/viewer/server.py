"""The viser server and its control panel.

:func:`start_server` checks the address first (a port in use is one line naming
``--viewer-port``; viser itself would silently move to the next free port), then starts viser.
:class:`ControlPanel` builds the panel: live numbers, the pose-error plot, pause / resume, "save
checkpoint now", the render panel with its RGB / depth switch, the scene toggles and the colour
legend. Its callbacks run on viser's threads and only write into :class:`ViewerControls`; the
training thread pushes new numbers and images into the panel between steps.
"""

from __future__ import annotations

import contextlib
import errno
import io
import socket
from typing import Any

import numpy as np

from taichi_nerf.viewer.controls import CameraView, ViewerControls

__all__ = ["INSTALL_HINT", "ViewerError", "import_viser", "check_address", "start_server",
           "stop_server", "ControlPanel"]

INSTALL_HINT = "pip install 'taichi-nerf[viewer]'"


class ViewerError(ValueError):
    """The viewer cannot start (viser missing, port in use, bad host); one line naming the fix."""


def import_viser():
    """The ``viser`` module, or a :class:`ViewerError` naming the install command."""
    try:
        import viser
    except ImportError:
        raise ViewerError(f"--viewer needs the viser package, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return viser


def check_address(host: str, port: int) -> None:
    """Raise :class:`ViewerError` unless a server can listen on ``host:port`` now."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ViewerError(f"--viewer-host {host}: not an address of this machine ({exc}); use "
                          f"127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ViewerError(f"--viewer-port {port}: {host}:{port} is already in use (another "
                                  f"viewer or program); pick a free port with --viewer-port N") \
                    from None
            raise ViewerError(f"--viewer-host {host} --viewer-port {port}: cannot listen there "
                              f"({exc.strerror or exc}); use a port above 1023, or another "
                              f"--viewer-host") from None


def start_server(host: str, port: int, label: str):
    """A running ``viser.ViserServer`` on exactly ``host:port`` (its banner not printed).

    Raises:
        ViewerError: viser is not installed, or the address is taken or unusable.
    """
    viser = import_viser()
    check_address(host, port)
    with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner; the caller prints one line
        server = viser.ViserServer(host=host, port=port, label=label, verbose=False)
    if server.get_port() != port:  # taken between the check and the start: viser moved on
        stop_server(server)
        raise ViewerError(f"--viewer-port {port}: {host}:{port} is already in use; pick a free "
                          f"port with --viewer-port N")
    server.gui.configure_theme(show_share_button=False, control_width="medium")
    return server


def stop_server(server) -> None:
    """Stop viser and its threads (its "server stopped" line not printed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        server.stop()


def _markdown_table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|:--|--:|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


class ControlPanel:
    """The GUI of one viewer: numbers, plot, buttons, render panel, toggles, legend.

    Args:
        server: the ``viser.ViserServer``.
        controls: where the callbacks record what the browser asks.
        live: a training run (pause and save buttons) or a finished one (none).
        has_grid: the renderer has an occupancy grid (the "occupancy grid" toggle).
    """

    def __init__(self, server, controls: ViewerControls, *, live: bool, has_grid: bool) -> None:
        from viser import uplot

        self.server, self.controls = server, controls
        gui = server.gui
        with gui.add_folder("Training" if live else "Run"):
            self.status = gui.add_markdown("starting")
            self.numbers = gui.add_markdown(_markdown_table([]))
            self.pause_button = self.save_button = None
            if live:
                self.pause_button = gui.add_button("Pause training")
                self.save_button = gui.add_button("Save checkpoint now")
                self.pause_button.on_click(lambda _: controls.toggle_pause())
                self.save_button.on_click(lambda _: controls.request_save())
            self.saved = gui.add_markdown("")
        with gui.add_folder("Render (your view)"):
            self.mode = gui.add_button_group("Show", ("RGB", "Depth"))
            self.mode.on_click(lambda event: controls.set_render_mode(
                "depth" if event.target.value == "Depth" else "rgb"))
            self.image = gui.add_image(np.full((48, 64, 3), 255, dtype=np.uint8),
                                       label=None, format="jpeg", jpeg_quality=90)
            self.render_info = gui.add_markdown("waiting for your camera")
        with gui.add_folder("Scene"):
            self.toggles: dict[str, Any] = {}
            names = {"truth": "Ground-truth cameras", "initial": "Initial cameras",
                     "box": "Scene box", "grid": "Occupancy grid"}
            for key, label in names.items():
                if key == "grid" and not has_grid:
                    continue
                box = gui.add_checkbox(label, initial_value=controls.show[key])
                box.on_update(lambda event, key=key: controls.set_shown(key, event.target.value))
                self.toggles[key] = box
            self.legend = gui.add_html("")
        with gui.add_folder("Pose error vs step"):
            self.plot = gui.add_uplot(
                data=(np.zeros(1), np.zeros(1), np.zeros(1)),
                series=(uplot.Series(label="step"),
                        uplot.Series(label="rotation (px)", stroke="#d62728", width=2),
                        uplot.Series(label="translation (px)", stroke="#1f77b4", width=2)),
                scales={"x": {"time": False, "auto": True}, "y": {"auto": True}},
                legend={"show": True}, aspect=2.0)

        @server.on_client_connect
        def _(client) -> None:
            def moved(camera) -> None:
                controls.set_camera(CameraView.from_viser(camera.wxyz, camera.position,
                                                          camera.fov, camera.aspect))

            client.camera.on_update(moved)
            moved(client.camera)

        @server.on_client_disconnect
        def _(client) -> None:
            if not server.get_clients():  # nobody looks: the render panel stops rendering
                controls.set_camera(None)

    def set_paused(self, paused: bool) -> None:
        """Show the pause button's next action."""
        if self.pause_button is not None:
            label = "Resume training" if paused else "Pause training"
            if self.pause_button.label != label:
                self.pause_button.label = label

    def set_numbers(self, rows: list[tuple[str, str]], status: str) -> None:
        text = _markdown_table(rows)
        if self.numbers.content != text:
            self.numbers.content = text
        if self.status.content != status:
            self.status.content = status

    def set_plot(self, steps: list[int], rotation_px: list[float],
                 translation_px: list[float]) -> None:
        if steps:
            self.plot.data = (np.asarray(steps, dtype=np.float64),
                              np.asarray(rotation_px, dtype=np.float64),
                              np.asarray(translation_px, dtype=np.float64))

    def set_legend(self, html: str) -> None:
        if self.legend.content != html:
            self.legend.content = html
