"""A simulated scene across processes: what LeRobot's own command lines need from a simulation
they did not start.

A ``mujoco_sim`` camera or a ``scripted_expert_sim`` teleoperator names its simulation. A plain name
is one started in the same process (:mod:`tmrl_vla.robots.sim.registry`); an address
``127.0.0.1:<port>`` is one served by another process: ``python -m tmrl_vla.robots.sim.serve``
(the simulated SO-101) or franky-sim's scene (``franka_scene.py``, the simulated Franka). Both
speak this module's protocol on a TCP port of 127.0.0.1, one JSON request per line:

* ``{"op": "frame", "camera": "front"}`` -> a JSON header line ``{"shape": [h, w, 3]}``, then the
  RGB bytes;
* ``{"op": "reset", "seed": 3}`` -> ``{"ok": true}`` (the cube put back somewhere new);
* ``{"op": "state"}`` -> ``{"cube": [x, y, z], "success": bool, "time": s}``;
* ``{"op": "expert"}`` -> ``{"action": {"<joint>.pos": value, ...}}`` (the scripted expert's next
  targets in the robot's units; the simulated SO-101 only).

An error is ``{"error": "..."}``, raised by the client as a ``ValueError``.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading

import numpy as np

LOCAL = "127.0.0.1"


def parse_address(simulation: str) -> tuple[str, int] | None:
    """``"127.0.0.1:5000"`` -> ``("127.0.0.1", 5000)``; a simulation's name (no port) -> None."""
    host, sep, port = simulation.rpartition(":")
    if not sep or not port.isdigit():
        return None
    if host not in (LOCAL, "localhost"):
        raise ValueError(f"simulations are served on {LOCAL} only, not {host!r} ({simulation!r})")
    return LOCAL, int(port)


class SceneConnection:
    """One TCP connection to a served scene."""

    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        try:
            self.socket = socket.create_connection((LOCAL, port), timeout=timeout_s)
        except OSError as e:
            raise ConnectionError(f"no simulation answers on {LOCAL}:{port} (is it running?): {e}") from e
        self.file = self.socket.makefile("rwb")
        self.lock = threading.Lock()  # one request at a time on this connection

    def request(self, message: dict) -> dict:
        return self._exchange(message)[0]

    def frame(self, camera: str) -> np.ndarray:
        return self._exchange({"op": "frame", "camera": camera})[1]

    def _exchange(self, message: dict) -> tuple[dict, np.ndarray | None]:
        with self.lock:
            self.file.write(json.dumps(message).encode() + b"\n")
            self.file.flush()
            line = self.file.readline()
            if not line:
                raise ConnectionError("the simulation closed the connection")
            header = json.loads(line)
            if "error" in header:
                raise ValueError(f"the simulation: {header['error']}")
            pixels = None
            if "shape" in header:
                shape = tuple(header["shape"])
                pixels = np.frombuffer(self.file.read(int(np.prod(shape))), dtype=np.uint8).reshape(shape).copy()
        return header, pixels

    def close(self) -> None:
        self.file.close()
        self.socket.close()


class SceneCamera:
    """One camera of a served scene, over its own connection (``read``/``close``, as a simulation's
    ``open_camera`` gives)."""

    def __init__(self, port: int, camera: str) -> None:
        self.connection, self.camera = SceneConnection(port), camera

    def read(self) -> np.ndarray:
        return self.connection.frame(self.camera)

    def close(self) -> None:
        self.connection.close()


class SceneServer:
    """Serves a simulation (``open_camera``, ``reset_scene``, ``state``; ``expert`` if given: a
    function returning the expert's next action) on a port of 127.0.0.1, one thread per connection,
    each with its own renderer per camera, of ``image_size`` square. It imports nothing of the
    project, so franky-sim's environment runs it too (``franka_scene.py``)."""

    def __init__(self, simulation, *, image_size: int, port: int = 0, expert=None) -> None:
        self.simulation, self.image_size, self.expert = simulation, image_size, expert
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                cameras: dict[str, object] = {}
                try:
                    for line in self.rfile:
                        header, payload = server.answer(json.loads(line), cameras)
                        self.wfile.write(json.dumps(header).encode() + b"\n" + payload)
                        self.wfile.flush()
                finally:
                    for camera in cameras.values():
                        camera.close()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((LOCAL, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="scene-server", daemon=True)

    def start(self) -> SceneServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, request: dict, cameras: dict) -> tuple[dict, bytes]:
        op, sim = request.get("op"), self.simulation
        try:
            if op == "frame":
                camera = request.get("camera")
                if camera not in cameras:
                    cameras[camera] = sim.open_camera(camera, self.image_size, self.image_size)
                frame = np.ascontiguousarray(cameras[camera].read())
                return {"shape": list(frame.shape)}, frame.tobytes()
            if op == "reset":
                sim.reset_scene(int(request["seed"]))
                return {"ok": True}, b""
            if op == "state":
                return sim.state(), b""
            if op == "expert" and self.expert is not None:
                return {"action": self.expert()}, b""
            return {"error": f"unknown op {op!r}"}, b""
        except (ValueError, KeyError) as e:
            return {"error": str(e)}, b""
