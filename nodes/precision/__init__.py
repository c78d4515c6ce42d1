"""Pure precision logic: no ComfyUI import, so it is unit-tested on plain torch tensors."""
