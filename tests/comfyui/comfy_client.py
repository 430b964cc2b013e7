"""A small HTTP client for a ComfyUI server on the loopback interface (tier c tests only).

Speaks ComfyUI's documented HTTP API: ``GET /object_info``, ``POST /prompt`` (``{"prompt", "client_id"}``
-> ``{"prompt_id", "number", "node_errors"}`` or HTTP 400 with ``{"error", "node_errors"}``),
``GET /history/<prompt_id>`` (empty until the prompt finished) and ``GET /view``. Standard library only.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class PromptRejected(Exception):
    """``POST /prompt`` answered an HTTP error; ``status`` and the decoded ``body`` are kept."""

    def __init__(self, status: int, body):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, url: str, log_path: str = None, base: str = None):
        assert url.startswith("http://127.0.0.1:"), "tier c talks to the loopback interface only"
        self.url = url.rstrip("/")
        self.log_path = log_path
        self.base = base
        self.client_id = uuid.uuid4().hex

    # ------------------------------------------------------------------ plumbing
    def _request(self, path: str, data: dict = None, timeout: float = 30.0):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, timeout: float = 30.0):
        return self._request(path, timeout=timeout)

    def get_bytes(self, path: str, timeout: float = 30.0) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.read()

    def ready(self) -> bool:
        try:
            self.get("/system_stats", timeout=3)
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def log_text(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_tail(self, n: int = 6000) -> str:
        return self.log_text()[-n:]

    # ------------------------------------------------------------------ API
    def object_info(self, node_class: str = None) -> dict:
        path = "/object_info" if node_class is None else f"/object_info/{urllib.parse.quote(node_class)}"
        return self.get(path, timeout=120)

    def queue(self, prompt: dict) -> str:
        """POST a prompt; returns its id or raises :class:`PromptRejected`."""
        try:
            answer = self._request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            raise PromptRejected(exc.code, body) from None
        assert not answer.get("node_errors"), answer
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll ``/history/<id>`` until the prompt finished; returns its history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if hist and prompt_id in hist:
                entry = hist[prompt_id]
                if entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") == "error":
                    return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_tail()}")

    def cancel(self, prompt_id: str, timeout: float = 120.0):
        """Press Cancel (``POST /interrupt``) and wait for the prompt to end; returns its ``execution_interrupted``
        message and the seconds from the press to the end. Fails unless the prompt ended as interrupted."""
        t0 = time.time()
        self._request("/interrupt", {})
        entry = self.wait(prompt_id, timeout=timeout)
        stopped_after = time.time() - t0
        messages = {m[0]: m[1] for m in entry["status"]["messages"]}
        assert entry["status"]["status_str"] == "error" and "execution_interrupted" in messages, list(messages)
        return messages["execution_interrupted"], stopped_after

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue ``prompt`` and wait; fails with the server's messages when it did not succeed."""
        entry = self.wait(self.queue(prompt), timeout)
        status = entry.get("status", {})
        if status.get("status_str") != "success":
            msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            raise AssertionError(f"prompt failed: {json.dumps(msgs)[:4000]}\n{self.log_tail(3000)}")
        return entry

    def view(self, image: dict) -> bytes:
        """The bytes of one image listed in a history ``ui`` entry (``filename``/``subfolder``/``type``)."""
        q = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        return self.get_bytes(f"/view?{q}")
