"""The enforce-downstream rewrite as a pure function of the API prompt (node type facts passed in)."""
import copy
import json

from precision_safe.nodes.precision.enforce import (CONTEXT, SPEC, WRAPPER, WRAPPER_OUTPUT, NodeType, Spec, rewrite,
                                                   touches, unwrap)

T = {
    "Loader": NodeType(inputs={"name": "COMBO"}, outputs=("MODEL", "CLIP", "VAE")),
    "PrecisionSafePolicy": NodeType(inputs={"vae": "VAE", "enforce_downstream": "BOOLEAN"},
                                    outputs=("PRECISION_CONTEXT", "MODEL", "CLIP", "VAE")),
    "Empty": NodeType(inputs={"width": "INT"}, outputs=("LATENT",)),
    "Decode": NodeType(inputs={"samples": "LATENT", "vae": "VAE"}, outputs=("IMAGE",)),
    "Half": NodeType(inputs={"image": "IMAGE"}, outputs=("IMAGE",)),
    "Preview": NodeType(inputs={"images": "IMAGE"}, output_node=True),
    # ComfyUI 0.33's PreviewImage / SaveImage: an output node that also hands its IMAGE on
    "PreviewOut": NodeType(inputs={"images": "IMAGE"}, outputs=("IMAGE",), output_node=True),
    "Text": NodeType(inputs={"value": "*"}, outputs=("STRING",)),
    "Splitter": NodeType(inputs={"image": "IMAGE"}, outputs=("IMAGE",), output_is_list=(True,)),
    "Lazy": NodeType(inputs={"image": "IMAGE"}, outputs=("IMAGE",), runs_as_is="input 'image' is lazy"),
}


def _policy(enforce=True):
    return {"class_type": "PrecisionSafePolicy", "inputs": {"vae": ["1", 2], "enforce_downstream": enforce}}


def graph(enforce=True):
    return {
        "1": {"class_type": "Loader", "inputs": {"name": "x"}},
        "2": _policy(enforce),
        "3": {"class_type": "Empty", "inputs": {"width": 8}},
        "4": {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["2", 3]},
              "_meta": {"title": "VAE Decode"}},
        "5": {"class_type": "Half", "inputs": {"image": ["4", 0]}},
        "6": {"class_type": "Preview", "inputs": {"images": ["5", 0]}},
        "7": {"class_type": "Preview", "inputs": {"images": ["8", 0]}},  # not downstream of the policy
        "8": {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
    }


def test_every_governed_node_is_wrapped_under_its_own_id_with_its_inputs_kept():
    p = graph()
    plan = rewrite(p, T)
    out = plan.prompt
    assert plan.wrapped == {"4": "2", "5": "2", "6": "2"}
    assert out["4"]["class_type"] == WRAPPER and out["6"]["class_type"] == WRAPPER_OUTPUT
    for nid in ("4", "5", "6"):
        assert {k: v for k, v in out[nid]["inputs"].items() if k not in (SPEC, CONTEXT)} == p[nid]["inputs"]
        assert out[nid]["inputs"][CONTEXT] == ["2", 0]
    spec = Spec.loads(out["4"]["inputs"][SPEC])
    assert spec == Spec("Decode", {"samples": "LATENT", "vae": "VAE"}, "VAE Decode #4", "2")
    assert Spec.loads(out["6"]["inputs"][SPEC]).node == "Preview #6"  # no _meta title: the class names it
    assert out["4"]["_meta"] == {"title": "VAE Decode"}
    for nid in ("1", "2", "3", "7", "8"):  # upstream, the policy itself, and the unrelated branch: as they were
        assert out[nid] == p[nid]


def test_the_prompt_given_is_not_modified_and_unwrap_restores_it():
    p = graph()
    before = copy.deepcopy(p)
    plan = rewrite(p, T)
    assert p == before
    assert unwrap(plan.prompt) == p


def test_rewriting_a_rewritten_prompt_changes_nothing():
    once = rewrite(graph(), T).prompt
    queued_again = json.loads(json.dumps(once))  # e.g. the prompt chunk of a saved PNG, queued again
    assert rewrite(unwrap(queued_again), T).prompt == once
    assert touches(once)


def test_without_an_enforcing_policy_nothing_changes():
    p = graph(enforce=False)
    assert not touches(p)
    plan = rewrite(p, T)
    assert plan.prompt == p and not plan.wrapped


def test_nodes_without_conformable_inputs_and_pack_nodes_are_not_wrapped():
    p = graph()
    p["9"] = {"class_type": "Text", "inputs": {"value": ["4", 0]}}  # '*' input fed an IMAGE: conformed as IMAGE
    p["10"] = {"class_type": "Text", "inputs": {"value": ["9", 0]}}  # fed a STRING: nothing to conform
    p["11"] = {"class_type": "PrecisionSafeSaveImage", "inputs": {"images": ["4", 0]}}
    plan = rewrite(p, T)
    assert Spec.loads(plan.prompt["9"]["inputs"][SPEC]).conform == {"value": "IMAGE"}
    assert plan.prompt["10"] == p["10"] and plan.prompt["11"] == p["11"]


def test_list_outputs_and_nodes_that_must_run_as_declared_are_left_out_with_the_reason():
    p = graph()
    p["5"] = {"class_type": "Splitter", "inputs": {"image": ["4", 0]}}
    p["9"] = {"class_type": "Half", "inputs": {"image": ["5", 0]}}  # mapped over the list: its output is a list too
    p["11"] = {"class_type": "Preview", "inputs": {"images": ["9", 0]}}
    p["10"] = {"class_type": "Lazy", "inputs": {"image": ["4", 0]}}
    p["12"] = {"class_type": "PreviewOut", "inputs": {"images": ["5", 0]}}  # its list output: linked to nothing
    plan = rewrite(p, T)
    assert set(plan.left_out) == {"5", "9", "10"}
    assert "list" in plan.left_out["5"] and "list" in plan.left_out["9"] and "lazy" in plan.left_out["10"]
    assert plan.prompt["6"]["class_type"] == WRAPPER_OUTPUT  # a list into an output node without outputs: fine
    assert plan.prompt["11"]["class_type"] == WRAPPER_OUTPUT
    assert plan.prompt["12"]["class_type"] == WRAPPER_OUTPUT  # nor with outputs nothing uses


def test_a_node_governed_by_two_policies_takes_the_nearest():
    p = graph()
    p["12"] = _policy()
    p["5"] = {"class_type": "Half", "inputs": {"image": ["4", 0]}}
    p["13"] = {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["12", 3]}}
    p["14"] = {"class_type": "Preview", "inputs": {"images": ["13", 0]}}
    plan = rewrite(p, T)
    assert plan.wrapped["4"] == "2" and plan.wrapped["13"] == "12" and plan.wrapped["14"] == "12"
