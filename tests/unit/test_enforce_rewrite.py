"""The enforce-downstream rewrite as a pure function of the API prompt (node type facts passed in)."""
import copy
import json

from precision_safe.nodes.precision.enforce import (CONFORM, CONTEXT, SPEC, VALUE, NodeType, Spec, governed_by,
                                                   rewrite, step_id, touches, unwrap)

T = {
    "Loader": NodeType(inputs={"name": "COMBO"}, outputs=("MODEL", "CLIP", "VAE")),
    "PrecisionSafePolicy": NodeType(inputs={"vae": "VAE", "enforce_downstream": "BOOLEAN"},
                                    outputs=("PRECISION_CONTEXT", "MODEL", "CLIP", "VAE")),
    "Empty": NodeType(inputs={"width": "INT"}, outputs=("LATENT",)),
    "Decode": NodeType(inputs={"samples": "LATENT", "vae": "VAE"}, outputs=("IMAGE",)),
    "Half": NodeType(inputs={"image": "IMAGE"}, outputs=("IMAGE",)),
    "Preview": NodeType(inputs={"images": "IMAGE"}),
    "Text": NodeType(inputs={"value": "*"}, outputs=("STRING",)),
    "Raw": NodeType(inputs={"image": "IMAGE"}, outputs=("IMAGE",), raw_links=frozenset({"image"})),
}


def _policy(enforce=True):
    inputs = {"vae": ["1", 2]}
    if enforce is not None:  # None: the input left out, as an API client that never heard of it sends it
        inputs["enforce_downstream"] = enforce
    return {"class_type": "PrecisionSafePolicy", "inputs": inputs}


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


def test_each_governed_link_gets_a_conform_step_and_every_node_keeps_its_id_class_and_other_inputs():
    p = graph()
    plan = rewrite(p, T)
    out = plan.prompt
    assert plan.governed == {"4": {"samples": "2", "vae": "2"}, "5": {"image": "2"}, "6": {"images": "2"}}
    for nid in p:  # every node the user made is still there under its id, with its class
        assert out[nid]["class_type"] == p[nid]["class_type"]
    for nid, name in (("4", "samples"), ("4", "vae"), ("5", "image"), ("6", "images")):
        sid = step_id(nid, name)
        assert out[nid]["inputs"][name] == [sid, 0]
        step = out[sid]
        assert step["class_type"] == CONFORM
        assert step["inputs"][VALUE] == p[nid]["inputs"][name] and step["inputs"][CONTEXT] == ["2", 0]
    assert Spec.loads(out[step_id("4", "vae")]["inputs"][SPEC]) == Spec("Decode", "4", "VAE Decode #4", "vae", "VAE",
                                                                         "2")
    assert Spec.loads(out[step_id("6", "images")]["inputs"][SPEC]).node == "Preview #6"  # no title: the class
    assert out["4"]["_meta"] == {"title": "VAE Decode"}
    for nid in ("1", "2", "3", "7", "8"):  # upstream, the policy itself, and the unrelated branch: as they were
        assert out[nid] == p[nid]
    assert len(out) == len(p) + 4


def test_the_switch_is_on_when_the_input_is_left_out():
    assert touches(graph(enforce=None)) and rewrite(graph(enforce=None), T).governed


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


def test_a_prompt_saved_by_the_earlier_wrapping_version_unwraps_to_what_the_user_made():
    p = graph()
    old = copy.deepcopy(p)
    old["6"] = {"class_type": "PrecisionSafeEnforcedOutput", "inputs": {
        "images": ["5", 0], "precision_safe_context": ["2", 0],
        "precision_safe_enforced": json.dumps({"class_type": "Preview", "conform": {"images": "IMAGE"},
                                               "node": "Preview #6", "policy": "2"})}}
    assert touches(old) and unwrap(old) == p


def test_without_an_enforcing_policy_nothing_changes():
    p = graph(enforce=False)
    assert not touches(p)
    plan = rewrite(p, T)
    assert plan.prompt == p and not plan.governed


def test_links_without_a_conformable_kind_into_pack_nodes_or_raw_links_are_left_alone():
    p = graph()
    p["9"] = {"class_type": "Text", "inputs": {"value": ["4", 0]}}  # '*' input fed an IMAGE: conformed as IMAGE
    p["10"] = {"class_type": "Text", "inputs": {"value": ["9", 0]}}  # fed a STRING: nothing to conform
    p["11"] = {"class_type": "PrecisionSafeSaveImage", "inputs": {"images": ["4", 0]}}
    p["12"] = {"class_type": "Raw", "inputs": {"image": ["4", 0]}}
    plan = rewrite(p, T)
    assert Spec.loads(plan.prompt[step_id("9", "value")]["inputs"][SPEC]).kind == "IMAGE"
    assert plan.prompt["10"] == p["10"] and plan.prompt["11"] == p["11"] and plan.prompt["12"] == p["12"]
    assert plan.left_out == {"12": "input 'image' takes a raw link"}


def test_a_node_governed_by_two_policies_takes_the_nearest():
    p = graph()
    p["12"] = _policy()
    p["13"] = {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["12", 3]}}
    p["14"] = {"class_type": "Preview", "inputs": {"images": ["13", 0]}}
    plan = rewrite(p, T)
    assert plan.governed["4"]["vae"] == "2" and plan.governed["13"]["vae"] == "12"
    assert plan.governed["14"] == {"images": "12"}
    assert {s.node_id for s in governed_by(plan.prompt, "12")} == {"13", "14"}
