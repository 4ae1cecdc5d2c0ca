"""The manager: capabilities, policies, depository, placement, binding, compliance."""
