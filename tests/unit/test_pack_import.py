import os

import precision_safe


def test_pack_root_imports_without_comfyui_and_names_its_web_folder():
    assert precision_safe.comfy_entrypoint is None  # no ComfyUI here: nothing registered, nothing failed
    web = os.path.join(os.path.dirname(precision_safe.__file__), precision_safe.WEB_DIRECTORY)
    assert os.path.isfile(os.path.join(web, "precision_safe.js"))
