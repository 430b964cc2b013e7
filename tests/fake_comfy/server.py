"""Fake of ComfyUI's ``server`` module: only ``PromptServer.instance.send_sync`` (recorded)."""


class PromptServer:
    instance = None

    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))


PromptServer.instance = PromptServer()
