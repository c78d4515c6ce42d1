"""Every dropdown and toggle of every pack node is validated as core's are: a bad value is refused before the run
(POST /prompt answers 400, node_errors naming the node, the input and the allowed values); good values still run."""
import glob
import json
import os

from comfy_client import ROOT, ui_to_api

WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
INTERNAL = {"PrecisionSafeConform"}  # inserted by enforce downstream, never in a prompt a user sends


def _specs(info, class_type):
    node = info[class_type]["input"]
    return {name: spec for section in ("required", "optional") for name, spec in node.get(section, {}).items()}


def _kind(spec):
    return "combo" if isinstance(spec[0], list) or spec[0] == "COMBO" else "boolean" if spec[0] == "BOOLEAN" else None


def _prompts(info):
    """The bundled workflows as API prompts; the Detailer with SAM also gets SAM options (in no workflow)."""
    prompts = []
    for path in WORKFLOWS:
        with open(path) as f:
            prompts.append(ui_to_api(json.load(f), info))
    detailed = next(p for p in prompts if any(n["class_type"] == "PrecisionSafeSAMLoader" for n in p.values()))
    detailer = next(n for n in detailed.values() if n["class_type"] == "PrecisionSafeDetailer")
    detailed["900"] = {"class_type": "PrecisionSafeDetailerSamOptions", "inputs": {
        name: spec[1]["default"] for name, spec in _specs(info, "PrecisionSafeDetailerSamOptions").items()}}
    detailer["inputs"]["sam_options"] = ["900", 0]
    return prompts


def _cases(info):
    """(prompt, node id, input, kind) for each pack widget a prompt sets; fails when a pack node's dropdown or toggle
    is in none of them (a new one must be covered)."""
    prompts, cases = _prompts(info), []
    for prompt in prompts:
        for nid, node in prompt.items():
            if node["class_type"].startswith("PrecisionSafe"):
                specs = _specs(info, node["class_type"])
                cases += [(prompt, nid, name, _kind(specs[name])) for name, value in node["inputs"].items()
                          if _kind(specs[name]) and not isinstance(value, list)]
    declared = {(ct, name) for ct in info if ct.startswith("PrecisionSafe") and ct not in INTERNAL
                for name, spec in _specs(info, ct).items() if _kind(spec)}
    covered = {(prompt[nid]["class_type"], name) for prompt, nid, name, _ in cases}
    assert declared <= covered, f"not covered by a prompt: {sorted(declared - covered)}"
    return cases


def _outputs_using(info, prompt, nid):
    """The output nodes of `prompt` that node `nid` feeds (ComfyUI runs the valid outputs of a prompt and refuses it
    only when none is valid: queued for these alone, a bad value must refuse it)."""
    def feeds(node):
        return node == nid or any(isinstance(v, list) and feeds(v[0]) for v in prompt[node]["inputs"].values())
    return [n for n, node in prompt.items() if info[node["class_type"]]["output_node"] and feeds(n)]


def _refusal(server, prompt, nid, name, value):
    bad = {**prompt, nid: {**prompt[nid], "inputs": {**prompt[nid]["inputs"], name: value}}}
    targets = _outputs_using(server.object_info(), prompt, nid)
    status, body = server.post("/prompt", {"prompt": bad, "partial_execution_targets": targets})
    assert status == 400, f"{prompt[nid]['class_type']}.{name} = {value!r} was accepted: {body}"
    errors = [e for e in body["node_errors"][nid]["errors"] if e["extra_info"].get("input_name") == name]
    assert errors, f"no error names {prompt[nid]['class_type']} #{nid} input {name!r}: {body['node_errors']}"
    return errors[0]


def test_a_bad_dropdown_value_is_refused_naming_the_node_input_and_options(server):
    info = server.object_info()
    for prompt, nid, name, kind in _cases(info):
        if kind == "combo":
            options = _specs(info, prompt[nid]["class_type"])[name][1]["options"]
            error = _refusal(server, prompt, nid, name, "fp12")
            assert error["type"] == "value_not_in_list", error
            listed = str(options) if len(options) <= 20 else f"(list of length {len(options)})"
            assert error["details"] == f"{name}: 'fp12' not in {listed}", error


def test_a_value_that_is_not_a_json_boolean_is_refused_on_its_toggle(server):
    info = server.object_info()
    for prompt, nid, name, kind in _cases(info):
        if kind == "boolean":
            for value in ("yes", "false", 1):
                error = _refusal(server, prompt, nid, name, value)
                assert error["type"] == "invalid_input_type", error
                assert error["details"].startswith(f"{name}, {json.dumps(value)}, "), error
                assert error["details"].endswith("not a JSON boolean; allowed values: true, false"), error


def test_the_editor_gets_the_same_dropdowns(server):
    """A dropdown's type is its options list (what ComfyUI checks values against), the same as its `options`, with
    its default among them; the Policy's are the pack's dtype and mode names."""
    info = server.object_info()
    for ct in (ct for ct in info if ct.startswith("PrecisionSafe")):
        for name, spec in _specs(info, ct).items():
            if _kind(spec) == "combo":
                assert spec[0] == spec[1]["options"] and spec[1].get("default", spec[0][0]) in spec[0], (ct, name)
    policy = _specs(info, "PrecisionSafePolicy")
    assert policy["vae_dtype"][0] == ["auto", "fp32", "fp16", "bf16"]
    assert policy["on_nonfinite"][0] == ["retry", "error", "keep"]
    assert policy["enforce_downstream"][0] == "BOOLEAN"


def test_good_values_other_than_the_defaults_still_run(server):
    info = server.object_info()
    prompt = next(_prompts(info)[i] for i, p in enumerate(WORKFLOWS) if "Policy tour" in p)
    for node in prompt.values():
        if node["class_type"] == "PrecisionSafePolicy":
            node["inputs"].update(vae_dtype="fp32", on_mismatch="error", on_nonfinite="keep",
                                  enforce_downstream=False)
        elif node["class_type"] == "PrecisionSafeDtypeInspect":
            node["inputs"]["strict"] = False
    run = server.run(prompt)
    assert run.success, run.error or run.rejected
