"""Validate and run API-format prompts the way ComfyUI does, against the pack's node classes.

Mirrors ``execution.validate_inputs`` of ComfyUI v0.3.64: required inputs present, linked output types
matching the input type (``validate_node_input`` semantics), widget values converted to INT/FLOAT/
STRING/BOOLEAN and checked against ``min``/``max``, custom ``validate_inputs``. Two checks are
*stricter* than ComfyUI, on purpose, to catch schema mistakes in our own workflows: an input name the
node does not declare is an error (ComfyUI silently drops it), and a V3 COMBO value must be one of its
options. Nodes execute under ``torch.inference_mode()``, as in ComfyUI.
"""
from __future__ import annotations

import inspect

import torch

WIDGET_CONVERTERS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


class PromptError(Exception):
    """The prompt failed validation; ``errors`` maps node id -> list of ComfyUI-style error dicts."""

    def __init__(self, errors):
        super().__init__("; ".join(f"node {k}: " + ", ".join(f"{e['type']} ({e['details']})" for e in v)
                                   for k, v in errors.items()))
        self.errors = errors


def types_match(received: str, expected: str) -> bool:
    if received == "*" or expected == "*" or received == expected:
        return True
    return bool({t.strip() for t in str(received).split(",")} & {t.strip() for t in str(expected).split(",")})


def _error(kind, name, details=""):
    return {"type": kind, "details": f"{name}: {details}" if details else name, "input_name": name}


def validate_prompt(prompt: dict, node_classes: dict) -> dict:
    """Return the prompt with converted widget values, or raise :class:`PromptError`."""
    errors, converted = {}, {}
    for node_id, node in prompt.items():
        errs = []
        cls = node_classes.get(node["class_type"])
        if cls is None:
            errors[node_id] = [_error("invalid_prompt", node["class_type"], "unknown class_type")]
            continue
        spec = cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        inputs = dict(node.get("inputs", {}))
        for name in inputs:
            if name not in declared:
                errs.append(_error("unknown_input", name, f"not an input of {node['class_type']}"))
        for name, (io_type, extra) in declared.items():
            if name not in inputs:
                if name in spec.get("required", {}):
                    errs.append(_error("required_input_missing", name))
                continue
            val = inputs[name]
            if isinstance(val, list):
                src_id, slot = val
                if src_id not in prompt:
                    errs.append(_error("bad_linked_input", name, f"no node {src_id}"))
                    continue
                src_cls = node_classes[prompt[src_id]["class_type"]]
                received = src_cls.RETURN_TYPES[slot]
                if not types_match(received, io_type):
                    errs.append(_error("return_type_mismatch", name, f"received {received}, wants {io_type}"))
                continue
            if io_type in WIDGET_CONVERTERS:
                try:
                    val = WIDGET_CONVERTERS[io_type](val)
                except Exception as exc:  # noqa: BLE001 - mirrors ComfyUI
                    errs.append(_error("invalid_input_type", name, str(exc)))
                    continue
                inputs[name] = val
            elif io_type != "COMBO":
                errs.append(_error("invalid_input_type", name, f"{io_type} needs a link, got a constant"))
                continue
            if "min" in extra and val < extra["min"]:
                errs.append(_error("value_smaller_than_min", name, f"{val} < {extra['min']}"))
            elif "max" in extra and val > extra["max"]:
                errs.append(_error("value_bigger_than_max", name, f"{val} > {extra['max']}"))
            elif io_type == "COMBO" and val not in extra.get("options", []):
                errs.append(_error("value_not_in_list", name, f"{val!r} not in {extra.get('options')}"))
        custom = getattr(cls, "validate_inputs", None)
        if not errs and custom is not None:
            params = inspect.signature(custom).parameters
            has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
            args = {k: v for k, v in inputs.items() if not isinstance(v, list) and (has_kwargs or k in params)}
            if args or has_kwargs:
                result = custom(**args)
                if result is not True:
                    errs.append(_error("custom_validation_failed", "validate_inputs", str(result)))
        if errs:
            errors[node_id] = errs
        converted[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    if errors:
        raise PromptError(errors)
    return converted


def run_prompt(prompt: dict, node_classes: dict) -> dict:
    """Validate, then execute every node in dependency order. Returns ``{node_id: NodeOutput}``."""
    prompt = validate_prompt(prompt, node_classes)
    done: dict = {}

    def run(node_id):
        if node_id in done:
            return done[node_id]
        node = prompt[node_id]
        kwargs = {}
        for name, val in node["inputs"].items():
            if isinstance(val, list):
                kwargs[name] = run(val[0]).result[val[1]]
            else:
                kwargs[name] = val
        cls = node_classes[node["class_type"]]
        with torch.inference_mode():
            out = getattr(cls, cls.FUNCTION)(**kwargs)  # EXECUTE_NORMALIZED, as ComfyUI calls it
        done[node_id] = out
        return out

    for node_id in prompt:
        run(node_id)
    return done
